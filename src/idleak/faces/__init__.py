"""Face pipeline: detect -> 5-point align -> embed, behind one ``Embedder`` interface.

Only this package imports dlib or onnxruntime.
"""

from __future__ import annotations

from idleak.errors import ModelError
from idleak.faces.base import Embedder, EmbedderSpec, Face, FaceChip, l2_normalize

__all__ = ["Embedder", "EmbedderSpec", "Face", "FaceChip", "l2_normalize", "load_embedder", "parse_model"]

#: Options each model takes (others given on the command line are ignored for it).
DLIB_OPTIONS = ("runtime", "device", "detector", "batch_size", "threads", "cache_root", "tta")
ONNX_OPTIONS = ("mean", "std", "bgr", "batch_size", "threads", "device", "detector")


def parse_model(model: str, **options: object) -> EmbedderSpec:
    """Turn a ``--model`` value (``dlib`` or ``onnx:PATH``) and backend options into a spec."""
    model = (model or "dlib").strip()
    if model != "dlib" and not model.startswith("onnx:"):
        raise ModelError(f"unknown --model {model!r}: use 'dlib' or 'onnx:PATH'")
    if model.startswith("onnx:") and not model[5:]:
        raise ModelError("--model onnx: needs a file path, e.g. onnx:arcface.onnx")
    clean = tuple(sorted((k, v) for k, v in options.items() if v is not None))
    return EmbedderSpec(model, clean)


def load_embedder(spec: EmbedderSpec | str = "dlib") -> Embedder:
    """Load the face model a spec names (in this process)."""
    if isinstance(spec, str):
        spec = parse_model(spec)
    if spec.model == "dlib":
        from idleak.faces.dlib_backend import DlibEmbedder

        return DlibEmbedder(**{k: v for k, v in spec.options if k in DLIB_OPTIONS})
    from idleak.faces.onnx_backend import OnnxEmbedder

    if spec.option("runtime", "onnx") != "onnx":
        raise ModelError("--runtime dlib only applies to the built-in dlib model")
    if spec.option("tta", "none") != "none":
        raise ModelError("--tta only applies to the built-in dlib model")
    return OnnxEmbedder(spec.model[5:], **{k: v for k, v in spec.options if k in ONNX_OPTIONS})

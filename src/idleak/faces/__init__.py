"""Face pipeline: detect -> 5-point align -> embed, behind one ``Embedder`` interface.

Only this package imports dlib or onnxruntime.
"""

from __future__ import annotations

from idleak.errors import ModelError
from idleak.faces.base import Embedder, EmbedderSpec, Face, l2_normalize

__all__ = ["Embedder", "EmbedderSpec", "Face", "l2_normalize", "load_embedder", "parse_model"]


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

        return DlibEmbedder()
    from idleak.faces.onnx_backend import OnnxEmbedder

    kwargs = {k: v for k, v in spec.options if k in ("mean", "std", "bgr", "batch_size", "threads")}
    return OnnxEmbedder(spec.model[5:], **kwargs)

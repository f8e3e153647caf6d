"""dlib's networks as ONNX graphs, built with ``onnx.helper`` from ``dlib_format``'s layer lists.

The MMOD face detector (``read_mmod``) becomes a fully convolutional graph from the tiled pyramid
to the score maps; the pyramid and the detections around it are ``dlib_mmod``'s. The face ResNet:

The graph takes aligned 150x150 RGB chips as ``uint8 (N, 150, 150, 3)`` (what dlib's
``get_face_chip`` returns) and gives dlib's raw 128-d descriptors ``(N, 128)``; the input scaling
``(x - mean) / 256`` is inside the graph, and each batch-norm affine is folded into the convolution
before it. It is built once per ``.dat`` file (keyed by the file's content hash) and cached on disk.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from idleak.errors import ModelError
from idleak.faces.dlib_format import DlibNet, Layer, read_resnet

#: Bump when the graph construction changes, so cached graphs are rebuilt.
GRAPH_VERSION = 1
OPSET = 17
INPUT, OUTPUT = "chips", "descriptors"
#: The MMOD detector graph: tiled pyramid ``float32 (N, 3, H, W)`` in, score maps ``(N, windows, h, w)`` out.
MMOD_INPUT, MMOD_OUTPUT = "pyramid", "scores"


def build_model(net: DlibNet):
    """An ``onnx.ModelProto`` computing ``net`` (see ``dlib_format`` for each layer's semantics)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list = []
    inits: list = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    size = net.input_size
    pyramid = net.loss["type"] == "mmod"
    if pyramid:  # the tiled pyramid is built outside the graph (dlib_mmod), already scaled
        nodes.append(helper.make_node("Identity", [MMOD_INPUT], ["input"]))
    else:
        mean = np.asarray(net.mean_rgb, np.float32).reshape(1, 3, 1, 1)
        nodes += [
            helper.make_node("Cast", [INPUT], ["x_float"], to=TensorProto.FLOAT),
            helper.make_node("Transpose", ["x_float"], ["x_nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Sub", ["x_nchw", const("mean_rgb", mean)], ["x_centred"]),
            helper.make_node("Mul", ["x_centred", const("inv_256", np.array(1 / 256, np.float32))], ["input"]),
        ]
    shapes: dict[str, tuple[int, int, int]] = {"input": (3, size, size)}
    consumers: dict[str, int] = {}
    for layer in net.layers:
        for name in layer.inputs:
            consumers[name] = consumers.get(name, 0) + 1
    folded: dict[str, str] = {}  # affine name -> the conv output it was folded into

    for layer in net.layers[1:]:
        src = [folded.get(name, name) for name in layer.inputs]
        c, h, w = shapes[layer.inputs[0]]
        out = layer.name
        p = layer.params
        if layer.kind == "conv":
            weight, bias = p["weight"], p["bias"]
            after = _only_consumer(net, layer.name, consumers)
            if after is not None and after.kind == "affine":  # fold x*scale+shift into the conv
                scale, shift = after.params["scale"], after.params["shift"]
                weight = weight * scale[:, None, None, None]
                bias = bias * scale + shift
                folded[after.name] = out
            (kh, kw), (sy, sx), (py, px) = p["kernel"], p["stride"], p["padding"]
            nodes.append(helper.make_node(
                "Conv", [src[0], const(f"{out}.w", weight.astype(np.float32)),
                         const(f"{out}.b", bias.astype(np.float32))], [out],
                kernel_shape=[kh, kw], strides=[sy, sx], pads=[py, px, py, px]))
            shapes[out] = (weight.shape[0], _side(h, kh, sy, py), _side(w, kw, sx, px))
        elif layer.kind == "affine":
            if layer.name in folded:
                shapes[out] = (c, h, w)
                continue
            nodes += [
                helper.make_node("Mul", [src[0], const(f"{out}.scale", p["scale"].reshape(1, -1, 1, 1))],
                                 [f"{out}.mul"]),
                helper.make_node("Add", [f"{out}.mul", const(f"{out}.shift", p["shift"].reshape(1, -1, 1, 1))], [out]),
            ]
            shapes[out] = (c, h, w)
        elif layer.kind == "relu":
            nodes.append(helper.make_node("Relu", src, [out]))
            shapes[out] = (c, h, w)
        elif layer.kind in ("max_pool", "avg_pool"):
            (kh, kw), (sy, sx), (py, px) = p["kernel"], p["stride"], p["padding"]
            if layer.kind == "avg_pool" and (kh, kw) == (0, 0):
                nodes.append(helper.make_node("GlobalAveragePool", src, [out]))
                shapes[out] = (c, 1, 1)
            else:
                op = "MaxPool" if layer.kind == "max_pool" else "AveragePool"
                nodes.append(helper.make_node(op, src, [out], kernel_shape=[kh, kw], strides=[sy, sx],
                                              pads=[py, px, py, px]))
                shapes[out] = (c, _side(h, kh, sy, py), _side(w, kw, sx, px))
        elif layer.kind == "add":
            target = tuple(max(a, b) for a, b in zip(shapes[layer.inputs[0]], shapes[layer.inputs[1]]))
            padded = []
            for name, value in zip(layer.inputs, src):
                have = shapes[name]
                if have == target:
                    padded.append(value)
                    continue
                pads = np.array([0, 0, 0, 0, 0, *(t - s for t, s in zip(target, have))], np.int64)
                nodes.append(helper.make_node("Pad", [value, const(f"{out}.{name}.pads", pads)], [f"{out}.{name}.pad"]))
                padded.append(f"{out}.{name}.pad")
            nodes.append(helper.make_node("Add", padded, [out]))
            shapes[out] = target
        elif layer.kind == "fc":
            nodes += [
                helper.make_node("Flatten", src, [f"{out}.flat"], axis=1),
                helper.make_node("MatMul", [f"{out}.flat", const(f"{out}.w", p["weight"])], [out]),
            ]
            shapes[out] = (p["weight"].shape[1], 1, 1)
        else:  # pragma: no cover - dlib_format only produces the kinds above
            raise ModelError(f"cannot build ONNX for layer kind {layer.kind!r}")
    if pyramid:
        nodes.append(helper.make_node("Identity", [folded.get(net.output, net.output)], [MMOD_OUTPUT]))
        inputs = [helper.make_tensor_value_info(MMOD_INPUT, TensorProto.FLOAT, ["N", 3, "H", "W"])]
        outputs = [helper.make_tensor_value_info(MMOD_OUTPUT, TensorProto.FLOAT,
                                                 ["N", shapes[net.output][0], "h", "w"])]
    else:
        nodes.append(helper.make_node("Identity", [folded.get(net.output, net.output)], [OUTPUT]))
        inputs = [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["N", size, size, 3])]
        outputs = [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", shapes[net.output][0]])]
    graph = helper.make_graph(nodes, net.architecture, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="idleak")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _side(n: int, kernel: int, stride: int, pad: int) -> int:
    return 1 + (n + 2 * pad - kernel) // stride


def _only_consumer(net: DlibNet, name: str, consumers: dict[str, int]) -> Layer | None:
    if consumers.get(name) != 1:
        return None
    return next(layer for layer in net.layers if name in layer.inputs)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_onnx(dat: str | Path, cache_root: Path, read: Callable[[Path], DlibNet] = read_resnet) -> Path:
    """The ONNX file for ``dat``, built on first use under ``cache_root/models`` (keyed by content hash).

    ``read`` parses the ``.dat`` file (``read_resnet`` or ``dlib_format.read_mmod``).
    """
    dat = Path(dat)
    if not dat.is_file():
        raise ModelError(f"dlib model file not found: {dat}")
    target = cache_root / "models" / f"{dat.stem}-{file_digest(dat)[:16]}-g{GRAPH_VERSION}.onnx"
    if target.is_file():
        return target
    model = build_model(read(dat))
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(model.SerializeToString())
        os.replace(tmp, target)  # atomic: concurrent first uses each write their own temp file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target

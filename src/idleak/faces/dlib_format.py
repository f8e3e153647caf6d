"""Read dlib's serialised networks (``.dat``) in pure Python/numpy, as an explicit list of layers.

Written from the format's definition (dlib's ``serialize.h`` and the ``serialize`` functions of
``dlib/dnn``): nothing here calls dlib. The reader knows the two architectures idleak uses,
``dlib_face_recognition_resnet_model_v1`` (``RESNET_V1``, ``read_resnet``) and the MMOD face
detector ``mmod_human_face_detector`` (``MMOD_V1``, ``read_mmod``: ``loss_mmod_`` options and an
``input_rgb_image_pyramid`` input), and each reader refuses any other file with a one-line
``ModelError``.

The encoding, in brief:

* integers: one control byte (low nibble = number of bytes that follow, bit 7 = negative), then
  the magnitude in little-endian bytes;
* ``double``/``float``: a mantissa (int64) and an exponent (int16), both as integers above;
  value = mantissa * 2**exponent;
* strings: length (integer) then the bytes; ``bool``: the character ``'0'`` or ``'1'``;
* tensors: version 2, num_samples, k, nr, nc (integers), then the values as little-endian
  float32 in NCHW order; alias tensors: version 1 and the four sizes only.

A network ``loss<layer_n<...<layer_1<input>>>>`` is written outside-in: the loss layer writes its
version, its own details, then its sub-network; every ``add_layer`` writes its version, its
sub-network, its details, then bookkeeping (flags and cached tensors); tag and skip layers write a
version and their sub-network only. So the file holds all the versions (outermost first), the
input layer, then every layer's details in forward order. Tag and skip layers leave no details,
which is why the wiring comes from the known architecture and is checked against every layer's
own record (type, filters, kernel, stride, padding).

``read_resnet(path)`` and ``read_mmod(path)`` return a ``DlibNet``: ``layers`` in forward order, each naming its
``inputs`` (earlier layer names), which is all that is needed to rebuild the network in torch or
ONNX. Semantics of each kind (tensors are NCHW float32):

``input``     ``x = (rgb - mean_rgb) / 256`` on a ``size x size`` RGB chip (red is channel 0).
``conv``      cross-correlation, ``weight (O, I, kh, kw)``, ``bias (O,)``, ``stride (sy, sx)``,
              symmetric zero ``padding (py, px)``; output side ``1 + (n + 2p - k) // s``.
``affine``    per-channel ``x * scale + shift`` (batch-norm folded with its running statistics).
``relu``      ``max(x, 0)``.
``max_pool``  ``kernel (kh, kw)``, ``stride``, ``padding`` as for ``conv``.
``avg_pool``  as ``max_pool``; ``kernel (0, 0)`` averages the whole feature map (global pool).
``add``       element-wise sum of two inputs whose shapes may differ: the result has the larger
              size in every dimension and a missing element counts as zero (the smaller tensor is
              zero-padded after its last channel / row / column). dlib's own ResNet relies on
              this: its stride-2 blocks add a 3x3 map to a 4x4 one.
``fc``        ``x.reshape(N, -1) @ weight`` with ``weight (inputs, outputs)``, no bias.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from idleak.errors import ModelError

__all__ = ["DlibNet", "Layer", "MMOD_V1", "RESNET_V1", "read_mmod", "read_resnet"]


@dataclass(frozen=True)
class Layer:
    """One layer of a rebuilt network (see the module docstring for each ``kind``'s semantics)."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DlibNet:
    """A dlib network as layers in forward order; ``output`` names the last one."""

    architecture: str
    input_size: int
    mean_rgb: tuple[float, float, float]
    layers: tuple[Layer, ...]
    output: str
    loss: dict

    def layer(self, name: str) -> Layer:
        for item in self.layers:
            if item.name == name:
                return item
        raise KeyError(name)


class _Corrupt(Exception):
    """Internal: the byte stream does not follow the format (turned into ModelError)."""


class _Reader:
    """Primitive decoders over a bytes-like buffer."""

    def __init__(self, data: bytes | mmap.mmap) -> None:
        self.data = data
        self.pos = 0

    def _take(self, count: int) -> bytes:
        end = self.pos + count
        if count < 0 or end > len(self.data):
            raise _Corrupt(f"file ends early (needed {count} bytes at offset {self.pos})")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def integer(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise _Corrupt(f"bad integer control byte 0x{control:02x} at offset {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little") if size else 0
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        if exponent >= 32000:  # dlib's markers for inf, -inf and nan
            return {32000: float("inf"), 32001: float("-inf")}.get(exponent, float("nan"))
        return float(np.ldexp(float(mantissa), exponent))

    def string(self, limit: int = 256) -> str:
        length = self.integer()
        if not 0 <= length <= limit:
            raise _Corrupt(f"implausible string length {length} at offset {self.pos}")
        try:
            return self._take(length).decode("ascii")
        except UnicodeDecodeError:
            raise _Corrupt(f"non-text string at offset {self.pos - length}") from None

    def boolean(self) -> bool:
        char = self._take(1)
        if char not in (b"0", b"1"):
            raise _Corrupt(f"bad boolean {char!r} at offset {self.pos - 1}")
        return char == b"1"

    def version(self, allowed: tuple[int, ...], what: str) -> int:
        at = self.pos
        value = self.integer()
        if value not in allowed:
            raise _Corrupt(f"{what}: version {value} at offset {at}, expected {allowed}")
        return value

    def tensor(self) -> np.ndarray:
        self.version((2,), "tensor")
        shape = tuple(self.integer() for _ in range(4))
        if any(s < 0 for s in shape):
            raise _Corrupt(f"negative tensor shape {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        self.version((1,), "alias_tensor")
        return tuple(self.integer() for _ in range(4))  # type: ignore[return-value]


# --- one layer's details -------------------------------------------------------------------


def _read_con(r: _Reader) -> dict:
    params = r.tensor()
    filters, rows, cols = r.integer(), r.integer(), r.integer()
    stride = (r.integer(), r.integer())
    padding = (r.integer(), r.integer())
    wshape, _ = r.alias(), r.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.real()
    n_weights = int(np.prod(wshape))
    if wshape[0] != filters or wshape[2:] != (rows, cols) or params.size != n_weights + filters:
        raise _Corrupt(f"con_ parameters do not match its {filters} filters of {rows}x{cols}")
    flat = params.reshape(-1)
    return {
        "weight": flat[:n_weights].reshape(wshape).copy(),
        "bias": flat[n_weights:].copy(),
        "kernel": (rows, cols), "stride": stride, "padding": padding,
    }


def _read_bn(r: _Reader) -> dict:
    """``bn_con2``: fold gamma/beta with the running statistics into an affine layer, as dlib does."""
    params = r.tensor()
    gshape, _ = r.alias(), r.alias()
    for _ in range(2):  # means, invstds of the last training batch
        r.tensor()
    running_means, running_variances = r.tensor().reshape(-1), r.tensor().reshape(-1)
    r.integer()  # num_updates
    r.integer()  # running_stats_window_size
    for _ in range(4):
        r.real()
    eps = r.real()
    channels = int(np.prod(gshape))
    if params.size != 2 * channels or running_means.size != channels or running_variances.size != channels:
        raise _Corrupt("bn_con2 parameters do not match its channel count")
    flat = params.reshape(-1)
    scale = (flat[:channels] * (np.float32(1) / np.sqrt(running_variances + np.float32(eps)))).astype(np.float32)
    shift = (flat[channels:] - scale * running_means).astype(np.float32)
    return {"scale": scale, "shift": shift}


def _read_affine(r: _Reader) -> dict:
    params = r.tensor()
    gshape, _ = r.alias(), r.alias()
    mode = r.integer()
    channels = int(np.prod(gshape))
    if mode != 0 or params.size != 2 * channels:
        raise _Corrupt("affine_ layer is not a per-channel (convolutional) affine")
    flat = params.reshape(-1)
    return {"scale": flat[:channels].copy(), "shift": flat[channels:].copy()}


def _read_pool(r: _Reader) -> dict:
    kernel = (r.integer(), r.integer())
    stride = (r.integer(), r.integer())
    padding = (r.integer(), r.integer())
    return {"kernel": kernel, "stride": stride, "padding": padding}


def _read_fc(r: _Reader) -> dict:
    outputs, inputs = r.integer(), r.integer()
    params = r.tensor()
    wshape, _ = r.alias(), r.alias()
    bias_mode = r.integer()
    for _ in range(4):
        r.real()
    if bias_mode != 1 or params.size != inputs * outputs or wshape[:2] != (inputs, outputs):
        raise _Corrupt("fc_ layer is not a bias-free inputs x outputs matrix")
    return {"weight": params.reshape(inputs, outputs).copy()}


#: Layer type strings as written in the file -> (our kind, details reader).
_DETAILS = {
    "con_4": ("conv", _read_con),
    "bn_con2": ("affine", _read_bn),
    "affine_": ("affine", _read_affine),
    "relu_": ("relu", lambda r: {}),
    "max_pool_2": ("max_pool", _read_pool),
    "avg_pool_2": ("avg_pool", _read_pool),
    "add_prev_": ("add", lambda r: {}),
    "fc_2": ("fc", _read_fc),
}


# --- the architecture ---------------------------------------------------------------------

# Tokens, outermost first, as dlib's template types nest. ("conv", filters, kernel, stride),
# ("pool" kinds, kernel, stride), ("tag", k), ("skip", k), ("add", tag k).


def _block(filters: int, stride: int) -> list[tuple]:
    return [("affine",), ("conv", filters, 3, 1), ("relu",), ("affine",), ("conv", filters, 3, stride)]


def _ares(filters: int) -> list[tuple]:
    return [("relu",), ("add", 1), *_block(filters, 1), ("tag", 1)]


def _ares_down(filters: int) -> list[tuple]:
    return [("relu",), ("add", 2), ("avg_pool", 2, 2), ("skip", 1), ("tag", 2), *_block(filters, 2), ("tag", 1)]


def _resnet_v1_tokens() -> list[tuple]:
    tokens: list[tuple] = [("fc", 128), ("avg_pool", 0, 1)]
    tokens += _ares_down(256)
    tokens += _ares(256) + _ares(256) + _ares_down(256)
    tokens += _ares(128) + _ares(128) + _ares_down(128)
    tokens += _ares(64) + _ares(64) + _ares(64) + _ares_down(64)
    tokens += _ares(32) + _ares(32) + _ares(32)
    tokens += [("max_pool", 3, 2), ("relu",), ("affine",), ("conv", 32, 7, 2)]
    return tokens


#: ``dlib_face_recognition_resnet_model_v1``: loss_metric<fc_no_bias<128, avg_pool_everything<
#: 4 levels of residual blocks (32, 64, 128, 256 filters) <max_pool<relu<affine<con<32,7,7,2,2,
#: input_rgb_image_sized<150>>>>>>>>>, outermost token first.
RESNET_V1 = _resnet_v1_tokens()
RESNET_V1_NAME = "dlib_face_recognition_resnet_model_v1"


def _mmod_v1_tokens() -> list[tuple]:
    tokens: list[tuple] = [("conv", 1, 9, 1)]
    for filters, size, stride in ((45, 5, 1),) * 3 + ((32, 5, 2), (32, 5, 2), (16, 5, 2)):
        tokens += [("relu",), ("affine",), ("conv", filters, size, stride)]
    return tokens


#: ``mmod_human_face_detector`` (dlib's dnn_mmod_face_detection_ex): loss_mmod<con<1,9,9,1,1,
#: 3 x relu<affine<con<45,5,5,1,1>>> < 3 x relu<affine<con<32|32|16,5,5,2,2>>> <
#: input_rgb_image_pyramid<pyramid_down<6>>>>>>, outermost token first.
MMOD_V1 = _mmod_v1_tokens()
MMOD_V1_NAME = "mmod_human_face_detector"


def _check(kind: str, params: dict, token: tuple) -> None:
    """Compare one layer's own record with what the architecture expects there."""
    if token[0] == "conv":
        _, filters, size, stride = token
        if (params["weight"].shape[0], params["kernel"], params["stride"]) != (filters, (size, size), (stride, stride)):
            raise _Corrupt(
                f"expected con<{filters},{size},{size},{stride},{stride}>, found {params['weight'].shape[0]} filters "
                f"{params['kernel']} stride {params['stride']}")
        if params["padding"] != ((size // 2,) * 2 if stride == 1 else (0, 0)):
            raise _Corrupt(f"unexpected conv padding {params['padding']}")
    elif token[0] in ("max_pool", "avg_pool"):
        _, size, stride = token
        if params["kernel"] != (size, size) or params["stride"] != (stride, stride) or params["padding"] != (0, 0):
            raise _Corrupt(f"expected {token[0]}<{size},{size},{stride},{stride}>, found {params}")
    elif token[0] == "fc" and params["weight"].shape[1] != token[1]:
        raise _Corrupt(f"expected fc_no_bias<{token[1]}>, found {params['weight'].shape[1]} outputs")


def read_resnet(path: str | Path) -> DlibNet:
    """Read ``dlib_face_recognition_resnet_model_v1.dat`` (or a file of the same architecture).

    Raises a one-line ``ModelError`` naming the file for a missing, truncated or corrupt file, and
    for a dlib network of another architecture.
    """
    return _read_file(path, RESNET_V1_NAME, _parse_resnet)


def read_mmod(path: str | Path) -> DlibNet:
    """Read ``mmod_human_face_detector.dat`` (or a file of the same architecture, see ``MMOD_V1``).

    The input layer's params hold ``mean_rgb``, ``pyramid_padding`` and ``pyramid_outer_padding``
    (``input_rgb_image_pyramid<pyramid_down<6>>``); ``loss`` holds the ``loss_mmod_`` options:
    ``windows`` ((width, height) per output channel), ``nms`` and ``ignore`` (each
    ``(iou_thresh, percent_covered_thresh)``) and the training losses. Errors as ``read_resnet``.
    """
    return _read_file(path, MMOD_V1_NAME, _parse_mmod)


def _read_file(path: str | Path, name: str, parse) -> DlibNet:
    path = Path(path)
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return parse(_Reader(data))
    except _Corrupt as exc:
        raise ModelError(f"{path}: not a readable {name} file ({exc})") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read dlib model ({exc.strerror or exc if isinstance(exc, OSError) else exc})"
                         ) from None


def _loss_type(r: _Reader, expected: str) -> None:
    r.version((1,), "loss layer")
    loss_type = r.string()
    if loss_type != expected:
        raise _Corrupt(f"loss layer is {loss_type!r}, expected {expected!r} (another network?)")


def _nested_versions(r: _Reader, tokens: list[tuple]) -> int:
    """Versions of the nested layers, outermost first: add_layer 1-2, tag/skip 1. The innermost
    add_layer (the first layer) holds the input layer and has versions 2-3; that one is returned."""
    for token in tokens[:-1]:
        r.version((1,) if token[0] in ("tag", "skip") else (1, 2), f"layer {token[0]}")
    return r.version((2, 3), "input add_layer")


def _parse_resnet(r: _Reader) -> DlibNet:
    _loss_type(r, "loss_metric_2")
    loss = {"type": "metric", "margin": r.real(), "distance_threshold": r.real()}
    input_version = _nested_versions(r, RESNET_V1)
    input_type = r.string()
    if input_type != "input_rgb_image_sized":
        raise _Corrupt(f"input layer is {input_type!r}, expected 'input_rgb_image_sized'")
    mean_rgb = (r.real(), r.real(), r.real())
    rows, cols = r.integer(), r.integer()
    if rows != cols or rows <= 0:
        raise _Corrupt(f"input is {rows}x{cols}")
    first = Layer("input", "input", (), {"size": rows, "mean_rgb": np.array(mean_rgb, np.float32)})
    layers = _read_layers(r, RESNET_V1, input_version, first)
    return DlibNet(RESNET_V1_NAME, rows, tuple(float(v) for v in mean_rgb), tuple(layers), layers[-1].name, loss)


def _parse_mmod(r: _Reader) -> DlibNet:
    _loss_type(r, "loss_mmod_")
    options_version = r.version((1,), "mmod_options")
    width, height = r.integer(), r.integer()
    if not (0 < width <= 10_000 and 0 < height <= 10_000):
        raise _Corrupt(f"implausible detector window {width}x{height}")
    loss = {
        "type": "mmod", "options_version": options_version, "windows": ((width, height),),
        "loss_per_false_alarm": r.real(), "loss_per_missed_target": r.real(),
        "truth_match_iou_threshold": r.real(),
        "nms": (r.real(), r.real()), "ignore": (r.real(), r.real()),
    }
    input_version = _nested_versions(r, MMOD_V1)
    input_type = r.string()
    if input_type not in ("input_rgb_image_pyramid", "input_rgb_image_pyramid2"):
        raise _Corrupt(f"input layer is {input_type!r}, expected 'input_rgb_image_pyramid'")
    mean_rgb = (r.real(), r.real(), r.real())
    padding, outer = (r.integer(), r.integer()) if input_type.endswith("2") else (10, 11)
    first = Layer("input", "input", (), {"size": 0, "mean_rgb": np.array(mean_rgb, np.float32),
                                          "pyramid_padding": padding, "pyramid_outer_padding": outer})
    layers = _read_layers(r, MMOD_V1, input_version, first)
    if layers[-1].params["weight"].shape[0] != len(loss["windows"]):
        raise _Corrupt("the last conv must give one score map per detector window")
    return DlibNet(MMOD_V1_NAME, 0, tuple(float(v) for v in mean_rgb), tuple(layers), layers[-1].name, loss)


def _read_layers(r: _Reader, tokens: list[tuple], input_version: int, first_layer: Layer) -> list[Layer]:
    """Every layer's details in forward order (innermost token first), wired by the architecture."""
    layers: list[Layer] = [first_layer]
    current = first_layer.name
    tags: dict[int, str] = {}
    counts: dict[str, int] = {}
    first = True
    for token in reversed(tokens):  # forward order: innermost layer first
        if token[0] == "tag":
            tags[token[1]] = current
            continue
        if token[0] == "skip":
            current = tags[token[1]]
            continue
        at = r.pos
        type_name = r.string()
        if type_name not in _DETAILS or _DETAILS[type_name][0] != token[0]:
            raise _Corrupt(f"found layer {type_name!r} at offset {at} where the architecture has {token[0]}")
        kind, read = _DETAILS[type_name]
        params = read(r)
        _check(kind, params, token)
        # add_layer bookkeeping: three flags, then cached tensors (and, for the layer on the input,
        # its gradient and, from version 3, the sample expansion factor).
        for _ in range(3):
            r.boolean()
        for _ in range(3):
            r.tensor()
        if first:
            if input_version == 3:
                r.integer()
            first = False
        counts[kind] = counts.get(kind, 0) + 1
        name = f"{kind}{counts[kind]}"
        inputs = (current, tags[token[1]]) if kind == "add" else (current,)
        layers.append(Layer(name, kind, inputs, params))
        current = name
    if r.pos != len(r.data):
        raise _Corrupt(f"{len(r.data) - r.pos} unexpected bytes after the network")
    _check_shapes(layers)
    return layers


def _check_shapes(layers: list[Layer]) -> None:
    """Channel counts must chain: each conv's input channels equal what reaches it."""
    channels: dict[str, int] = {}
    for layer in layers:
        if layer.kind == "input":
            channels[layer.name] = 3
            continue
        incoming = [channels[name] for name in layer.inputs]
        if layer.kind == "conv":
            if layer.params["weight"].shape[1] != incoming[0]:
                raise _Corrupt(f"{layer.name} expects {layer.params['weight'].shape[1]} channels, gets {incoming[0]}")
            channels[layer.name] = layer.params["weight"].shape[0]
        elif layer.kind == "affine":
            if layer.params["scale"].size != incoming[0]:
                raise _Corrupt(f"{layer.name} has {layer.params['scale'].size} channels, gets {incoming[0]}")
            channels[layer.name] = incoming[0]
        elif layer.kind == "fc":
            if layer.params["weight"].shape[0] != incoming[0]:
                raise _Corrupt(f"{layer.name} expects {layer.params['weight'].shape[0]} inputs, gets {incoming[0]}")
            channels[layer.name] = layer.params["weight"].shape[1]
        else:
            channels[layer.name] = max(incoming)

"""dlib's MMOD CNN face detector (``mmod_human_face_detector.dat``), ported: numpy + onnxruntime, no dlib.

Written from the definitions in dlib's sources (``input_rgb_image_pyramid``, ``pyramid_down<6>``,
``compute_tiled_image_pyramid_details``, ``resize_image``'s bilinear kernels, ``loss_mmod_``'s
``to_label``, the Python ``cnn_face_detection_model_v1``). What dlib does, step by step, and what
each step here is:

1. ``upsample`` times ``pyramid_up`` (2x bilinear, ``pyramid_down<2>``'s geometry): ``upsample_rgb``.
2. The tiled pyramid: the image, scaled ``(x - mean) / 256``, then every ``5/6`` level resized
   bilinearly from the one before, packed into one zero-padded canvas (``tiled_pyramid``).
3. The network over the whole canvas: an ONNX graph from ``dlib_format.read_mmod``
   (``dlib_onnx.build_model``), run by onnxruntime.
4. Every score above 0 is a detection: its output position maps back through the network's strides
   to the canvas, an 80x80 window there maps back through its pyramid tile to the image, and
   non-maximum suppression (dlib's ``test_box_overlap``, stored in the file) keeps the best of
   overlapping windows (``detections``).
5. Boxes map back through the upsampling (``pyramid_down<2>::rect_down``).

Boxes are ``(left, top, right, bottom)`` integer tuples (inclusive, as ``dlib.rectangle``);
scores are the network's raw output, as dlib's ``mmod_rectangle.confidence``.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from pathlib import Path

import numpy as np

from idleak.errors import ModelError
from idleak.faces.dlib_format import DlibNet, read_mmod

#: ``pyramid_down<6>``: every level is 5/6 of the one before.
PYRAMID_N = 6
#: dlib stops the pyramid when a level would be lower than this.
MIN_LEVEL_HEIGHT = 5

Rect = tuple[int, int, int, int]


# --- geometry (dlib's rectangle conventions: inclusive corners, width = right - left + 1) ----------


def _round(value: float) -> int:
    """dlib's conversion of a double coordinate to a pixel: to nearest, halves away from zero
    (``std::round``; ``-4.5 -> -5``, checked against dlib's own detector)."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def _area(rect: Rect) -> int:
    left, top, right, bottom = rect
    return max(0, right - left + 1) * max(0, bottom - top + 1)


def _intersection(a: Rect, b: Rect) -> Rect:
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))


def overlaps(a: Rect, b: Rect, iou_thresh: float, covered_thresh: float) -> bool:
    """dlib's ``test_box_overlap``: IoU above ``iou_thresh`` or either box covered above ``covered_thresh``."""
    inner = _area(_intersection(a, b))
    if inner == 0:
        return False
    outer = _area((min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
    return inner / outer > iou_thresh or inner / _area(a) > covered_thresh or inner / _area(b) > covered_thresh


def _down_size(n: int) -> int:
    """``find_pyramid_down_output_image_size`` for ``pyramid_down<6>``."""
    return math.floor(((PYRAMID_N - 1.0) / PYRAMID_N) * n)


def pyramid_rects(rows: int, cols: int, padding: int, outer_padding: int) -> tuple[list[Rect], int, int]:
    """Where each pyramid level sits in the tiled canvas, and the canvas's rows and columns.

    dlib's ``compute_tiled_image_pyramid_details``: levels go down a first column from the top
    left; once the rest fits beside the image they come back up a second column from the bottom
    right, stopping before one would overlap the full-size image.
    """
    if rows * cols == 0:
        return [], 0, 0
    sizes = [(cols, rows)]
    nr, nc = rows, cols
    while True:
        nr, nc = _down_size(nr), _down_size(nc)
        if nr * nc == 0 or nr < MIN_LEVEL_HEIGHT:
            break
        sizes.append((nc, nr))
    total_height = sum(h + padding for _, h in sizes) - 2 * padding
    height, prev_width = 0, 0
    for w, h in sizes:
        if w <= cols - prev_width - padding and (height - rows) * 2 >= total_height - rows:
            break
        height += h + padding
        prev_width = w
    height -= padding
    canvas_rows, canvas_cols = height + 2 * outer_padding, cols + 2 * outer_padding

    rects: list[Rect] = []
    y, i = outer_padding, 0
    while y < height + outer_padding and i < len(sizes):
        w, h = sizes[i]
        rects.append((outer_padding, y, outer_padding + w - 1, y + h - 1))
        y += h + padding
        i += 1
    y -= padding
    while i < len(sizes):
        w, h = sizes[i]
        right, bottom = outer_padding + cols - 1, y - 1
        rect = (right - (w - 1), bottom - (h - 1), right, bottom)
        if _area(_intersection(rects[0], rect)) > 0:
            break
        rects.append(rect)
        y -= h + padding
        i += 1
    return rects, canvas_rows, canvas_cols


# --- bilinear resizing, as dlib's resize_image does it ------------------------------------------


def _axis(n_in: int, n_out: int) -> tuple[float, np.ndarray]:
    """dlib's scale ``(n_in - 1) / (n_out - 1)`` and the positions it reaches by repeated addition."""
    scale = (n_in - 1) / max(n_out - 1, 1)
    steps = np.full(n_out + 1, scale)
    steps[0] = -scale
    return scale, np.cumsum(steps)[1:]


def resize_bilinear(src: np.ndarray, out_rows: int, out_cols: int) -> np.ndarray:
    """``(C, h, w)`` float32 or uint8 planes resized to ``(C, out_rows, out_cols)`` like dlib.

    dlib's grayscale/float and RGB ``resize_image(..., interpolate_bilinear)``: rows in double
    precision; columns four at a time in float32 (positions accumulated in float32, indices
    truncated) until the right neighbour of the fourth would leave the image, then the remaining
    columns in double precision. uint8 results are truncated, float results stored as float32.
    """
    channels, rows, cols = src.shape
    integer = src.dtype == np.uint8
    _, ys = _axis(rows, out_rows)
    top = np.floor(ys).astype(np.int64)
    bottom = np.minimum(top + 1, rows - 1)
    tb = ys - top

    x_scale, _ = _axis(cols, out_cols)
    # The four-wide float32 loop: lane j starts at float(x0 + j*scale), x0 = -4*scale, and adds float(4*scale).
    blocks = out_cols // 4 + 2
    step = np.float32(4 * x_scale)
    lanes = np.empty((blocks, 4), np.float32)
    for j in range(4):
        seq = np.full(blocks + 1, step, np.float32)
        seq[0] = np.float32(-4 * x_scale + j * x_scale)
        lanes[:, j] = np.cumsum(seq, dtype=np.float32)[1:]
    left4 = lanes.astype(np.int64)  # truncation, as _mm_cvttps_epi32
    stop = np.nonzero(left4[:, 3] + 1 >= cols)[0]
    n_simd = min(4 * int(stop[0]) if stop.size else 4 * blocks, out_cols)
    xs32 = lanes.reshape(-1)[:n_simd]
    left_s = left4.reshape(-1)[:n_simd]
    right_s = left_s + 1
    lr32 = (xs32 - left_s.astype(np.float32)).astype(np.float32)

    data = src.astype(np.float32) if integer else src
    # uint8 results are truncated from the float32 (four-wide) or double (tail) value itself
    out = np.empty((channels, out_rows, out_cols), np.float64 if integer else np.float32)
    if n_simd:
        tb32, inv_tb32 = tb.astype(np.float32)[:, None], (1 - tb).astype(np.float32)[:, None]
        inv_lr32 = (np.float32(1) - lr32)[None, :]
        lr32b = lr32[None, :]
        tlf, trf, blf, brf = inv_tb32 * inv_lr32, inv_tb32 * lr32b, tb32 * inv_lr32, tb32 * lr32b
        # gather columns once on the input rows, then rows (contiguous copies); same arithmetic order
        left_cols, right_cols = data[:, :, left_s], data[:, :, right_s]
        value = tlf * left_cols[:, top]
        value += trf * right_cols[:, top]
        value += blf * left_cols[:, bottom]
        value += brf * right_cols[:, bottom]
        out[:, :, :n_simd] = value
    if n_simd < out_cols:
        count = out_cols - n_simd
        steps = np.full(count + 1, x_scale)
        steps[0] = -x_scale + n_simd * x_scale
        xs = np.cumsum(steps)[1:]
        left = np.floor(xs).astype(np.int64)
        right = np.minimum(left + 1, cols - 1)
        top_rows, bottom_rows = data[:, top], data[:, bottom]
        tbd = tb[:, None]
        if integer:
            lr = (xs - left)[None, :]
            upper = (1 - lr) * top_rows[:, :, left].astype(np.float64) + lr * top_rows[:, :, right]
            lower = (1 - lr) * bottom_rows[:, :, left].astype(np.float64) + lr * bottom_rows[:, :, right]
        else:
            lr = (xs - left).astype(np.float32)[None, :]
            upper = (np.float32(1) - lr) * top_rows[:, :, left] + lr * top_rows[:, :, right]
            lower = (np.float32(1) - lr) * bottom_rows[:, :, left] + lr * bottom_rows[:, :, right]
        out[:, :, n_simd:] = (1 - tbd) * upper.astype(np.float64) + tbd * lower.astype(np.float64)
    if integer:
        return np.clip(out.astype(np.int64), 0, 255).astype(np.uint8)
    return out


def upsample_rgb(image: np.ndarray) -> np.ndarray:
    """dlib's ``pyramid_up(img)`` for an RGB image: about 2x, sized by ``pyramid_down<2>::rect_up``."""
    rows, cols = image.shape[:2]
    out_cols = _round((cols - 1 + 1.25) * 2) + 1
    out_rows = _round((rows - 1 + 0.75) * 2) + 1
    planes = np.ascontiguousarray(image.transpose(2, 0, 1))
    return np.ascontiguousarray(resize_bilinear(planes, out_rows, out_cols).transpose(1, 2, 0))


def tiled_pyramid(image: np.ndarray, mean_rgb: np.ndarray, padding: int, outer_padding: int
                  ) -> tuple[np.ndarray, list[Rect]]:
    """The network's input ``(3, R, C)`` float32 for one RGB image, and the level rectangles."""
    rows, cols = image.shape[:2]
    rects, canvas_rows, canvas_cols = pyramid_rects(rows, cols, padding, outer_padding)
    canvas = np.zeros((3, canvas_rows, canvas_cols), np.float32)
    if not rects:
        return canvas, rects
    left, top, right, bottom = rects[0]
    centred = image.transpose(2, 0, 1).astype(np.float32) - np.asarray(mean_rgb, np.float32)[:, None, None]
    canvas[:, top:bottom + 1, left:right + 1] = centred / np.float32(256)
    for before, rect in zip(rects, rects[1:]):
        src = canvas[:, before[1]:before[3] + 1, before[0]:before[2] + 1]
        canvas[:, rect[1]:rect[3] + 1, rect[0]:rect[2] + 1] = resize_bilinear(
            src, rect[3] - rect[1] + 1, rect[2] - rect[0] + 1)
    return canvas, rects


# --- from score maps to boxes ---------------------------------------------------------------------


def output_to_input(net: DlibNet) -> tuple[float, float]:
    """``(scale, offset)`` with input = output * scale + offset (dlib's ``map_output_to_input``)."""
    scale, offset = 1.0, 0.0
    for layer in reversed(net.layers):
        if layer.kind == "conv":
            stride, pad, kernel = layer.params["stride"][0], layer.params["padding"][0], layer.params["kernel"][0]
            # p -> p * stride - pad + kernel // 2, applied from the output layer inwards
            offset = offset * stride - pad + kernel // 2
            scale *= stride
    return scale, offset


def _nearest_level(rects: list[Rect], x: int, y: int) -> int:
    best, best_dist = 0, math.inf
    for i, (left, top, right, bottom) in enumerate(rects):
        if left <= x <= right and top <= y <= bottom:
            return i
        nx, ny = min(max(x, left), right), min(max(y, top), bottom)
        dist = math.hypot(nx - x, ny - y)
        if dist < best_dist:
            best, best_dist = i, dist
    return best


def _to_image(rects: list[Rect], box: tuple[float, float, float, float]) -> Rect:
    """dlib's ``tiled_pyramid_to_image``: the level nearest the box centre, then ``point_up`` per level."""
    left, top, right, bottom = box
    level = _nearest_level(rects, _round((left + right) / 2), _round((top + bottom) / 2))
    ox, oy = rects[level][0], rects[level][1]
    corners = [left - ox, top - oy, right - ox, bottom - oy]
    ratio = PYRAMID_N / (PYRAMID_N - 1.0)
    for _ in range(level):
        corners = [v * ratio + 0.3 for v in corners]
    return tuple(_round(v) for v in corners)  # type: ignore[return-value]


def detections(scores: np.ndarray, rects: list[Rect], net: DlibNet, threshold: float = 0.0
               ) -> list[tuple[Rect, float]]:
    """``loss_mmod_::to_label`` for one image's score maps ``(windows, h, w)``: boxes best first after NMS."""
    scale, offset = output_to_input(net)
    found: list[tuple[float, Rect]] = []
    for k, (width, height) in enumerate(net.loss["windows"]):
        rows, cols = np.nonzero(scores[k] > threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            px, py = c * scale + offset, r * scale + offset
            half_w, half_h = (width - 1) / 2, (height - 1) / 2
            box = _to_image(rects, (px - half_w, py - half_h, px + half_w, py + half_h))
            found.append((float(scores[k, r, c]), box))
    found.sort(key=lambda item: -item[0])
    iou, covered = net.loss["nms"]
    kept: list[tuple[Rect, float]] = []
    for score, box in found:
        if any(overlaps(other, box, iou, covered) for other, _ in kept):
            continue
        kept.append((box, score))
    return kept


def rect_down2(rect: Rect, times: int) -> Rect:
    """``pyramid_down<2>::rect_down(rect, times)``: a box on the upsampled image back on the original."""
    corners = [float(v) for v in rect]
    for _ in range(times):
        corners = [corners[0] / 2 - 1.25, corners[1] / 2 - 0.75, corners[2] / 2 - 1.25, corners[3] / 2 - 0.75]
    return tuple(_round(v) for v in corners)  # type: ignore[return-value]


class MmodDetector:
    """The ported detector: ``detector(rgb_uint8, upsample)`` -> ``[(box, score), ...]`` best first;
    ``detect_many`` for a list of images."""

    def __init__(self, dat: str | Path, cache_root: Path, device: str = "cpu", threads: int = 0) -> None:
        from idleak.faces.dlib_onnx import MMOD_INPUT, cached_onnx

        self.net = read_mmod(dat)
        first = self.net.layers[0].params
        self.mean_rgb = first["mean_rgb"]
        self.padding, self.outer_padding = first["pyramid_padding"], first["pyramid_outer_padding"]
        self.path = cached_onnx(dat, cache_root, read=read_mmod)
        self.label = f"{Path(dat).name} (ONNX port)"
        self.device, self.threads = device, threads
        self.input_name = MMOD_INPUT
        self._session = None
        self._session_pid: int | None = None

    def session(self):
        """The onnxruntime session of this process: made on first use, so forked workers never run
        their parent's (its thread pool does not survive a fork); one thread in worker processes, which
        run one per core."""
        if self._session_pid != os.getpid():
            from idleak.faces.runtime import make_session

            threads = self.threads or (1 if multiprocessing.parent_process() is not None else 0)
            self._session, _ = make_session(self.path, device=self.device, threads=threads, label=self.label)
            self._session_pid = os.getpid()
        return self._session

    def __call__(self, image: np.ndarray, upsample: int = 0) -> list[tuple[Rect, float]]:
        return self.detect_many([image], upsample)[0]

    def detect_many(self, images: list[np.ndarray], upsample: int = 0, batch_size: int = 16
                    ) -> list[list[tuple[Rect, float]]]:
        """Detections per image; images of the same size share inference calls (``batch_size`` canvases
        each), as dlib's ``detect_mult`` batches a list of same-sized images."""
        prepared = [self._prepare(image, upsample) for image in images]
        results: list[list[tuple[Rect, float]]] = [[] for _ in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (canvas, rects) in enumerate(prepared):
            if rects and min(canvas.shape[1:]) >= self._smallest_input():
                groups.setdefault(canvas.shape, []).append(i)
        for members in groups.values():
            for start in range(0, len(members), batch_size):
                chunk = members[start:start + batch_size]
                batch = np.stack([prepared[i][0] for i in chunk])
                scores = self.session().run(None, {self.input_name: batch})[0]
                for i, maps in zip(chunk, scores):
                    found = detections(maps, prepared[i][1], self.net)
                    results[i] = [(rect_down2(box, upsample), score) for box, score in found]
        return results

    def _prepare(self, image: np.ndarray, upsample: int) -> tuple[np.ndarray, list[Rect]]:
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ModelError(f"the CNN face detector needs an 8-bit gray or RGB image, got {image.dtype} "
                             f"{image.shape}")
        for _ in range(upsample):
            image = upsample_rgb(image)
        return tiled_pyramid(image, self.mean_rgb, self.padding, self.outer_padding)

    def _smallest_input(self) -> int:
        """The least canvas side that still gives a score map (three 5x5 stride-2 convolutions: 29)."""
        side = 1
        for layer in reversed(self.net.layers):
            if layer.kind == "conv":
                (k, _), (s, _), (p, _) = layer.params["kernel"], layer.params["stride"], layer.params["padding"]
                side = (side - 1) * s + k - 2 * p
        return max(side, 1)

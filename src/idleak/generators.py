"""Generators given as ``module:function``: load them, sample them in batches, keep every sample with its seed.

Contract for a sampling callable: ``sample(n: int, seed: int)`` returns ``n`` images, each a PIL image
or an ``HxW``/``HxWx1``/``HxWx3``/``HxWx4`` ``uint8`` array (a ``(n, H, W, 3)`` array works too).
idleak calls it with ``seed = seed0 + (number of samples drawn before this batch)``, so sample ``j``
of a batch was drawn with ``(seed, j)``; a generator that seeds its ``j``-th sample with ``seed + j``
makes every sample regenerable on its own (``sample(1, seed + j)``), any generator regenerates it as
``sample(batch, seed)[j]``. Files are ``OUT/seed{seed}_{j}.png`` and ``samples.csv`` lists them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from idleak.errors import IdleakError
from idleak.sources import Source

ProgressFn = Callable[[int, int], None]
SampleFn = Callable[[int, int], Iterable]

#: Columns of ``samples.csv`` in a sample folder.
SAMPLE_COLUMNS = ["path", "seed", "index", "batch_size"]


def load_callable(spec: str, what: str = "--generator") -> Callable:
    """The callable named by ``module:function`` (a dotted module or a ``.py`` file path; nested attributes
    allowed). The current directory is importable, as with ``python -m``. One-line ``IdleakError`` naming
    ``what`` (the option it came from) if the spec is malformed or does not resolve."""
    spec = spec.strip() if isinstance(spec, str) else spec
    if not isinstance(spec, str) or spec.count(":") < 1:
        raise IdleakError(f"{what} must be 'module:function' (e.g. my_pkg.gen:sample), got {spec!r}")
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise IdleakError(f"{what} must be 'module:function' (e.g. my_pkg.gen:sample), got {spec!r}")
    module = _import(module_name, spec, what)
    target: object = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise IdleakError(f"{what} {spec}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise IdleakError(f"{what} {spec}: {attr!r} is not callable")
    return target


def _import(module_name: str, spec: str, what: str) -> object:
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise IdleakError(f"{what} {spec}: file not found: {path}")
        name = f"_idleak_user_{abs(hash(str(path.resolve())))}"
        if name in sys.modules:
            return sys.modules[name]
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise IdleakError(f"{what} {spec}: cannot import {path}")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - user code; report it in one line
            del sys.modules[name]
            raise IdleakError(f"{what} {spec}: importing {path} failed: {type(exc).__name__}: "
                              f"{_first_line(exc)}") from None
        return module
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise IdleakError(f"{what} {spec}: cannot import module {module_name!r}: not found "
                              "(is it on PYTHONPATH?)") from None
        raise IdleakError(f"{what} {spec}: cannot import module {module_name!r}: missing module {exc.name!r}") \
            from None
    except Exception as exc:  # noqa: BLE001 - user code; report it in one line
        raise IdleakError(f"{what} {spec}: importing {module_name!r} failed: {type(exc).__name__}: "
                          f"{_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


def to_uint8_rgb(image: object, where: str = "sample") -> np.ndarray:
    """One generated image as a contiguous ``HxWx3`` uint8 array; ``IdleakError`` if it is not an image."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise IdleakError(f"{where}: images must be uint8 arrays or PIL images, got dtype {array.dtype} "
                          "(scale floats to 0..255 and convert)")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
        raise IdleakError(f"{where}: expected an HxWx3 image, got shape {array.shape}")
    return np.ascontiguousarray(array[:, :, :3])


def call_batch(fn: SampleFn, n: int, seed: int) -> list[np.ndarray]:
    """``fn(n, seed)`` as a list of ``n`` RGB uint8 arrays; ``IdleakError`` on a wrong count or type."""
    try:
        images = fn(n, seed)
    except IdleakError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code; report it in one line
        raise IdleakError(f"generator failed on sample(n={n}, seed={seed}): {type(exc).__name__}: "
                          f"{_first_line(exc)}") from None
    if images is None:
        raise IdleakError(f"generator returned None for sample(n={n}, seed={seed})")
    if isinstance(images, Image.Image) or (isinstance(images, np.ndarray) and images.ndim < 4):
        images = [images]  # one image for n == 1
    try:
        images = list(images)
    except TypeError:
        raise IdleakError(f"generator returned {type(images).__name__}, not a list of images") from None
    if len(images) != n:
        raise IdleakError(f"generator returned {len(images)} images for sample(n={n}, seed={seed})")
    return [to_uint8_rgb(image, f"sample(n={n}, seed={seed})[{j}]") for j, image in enumerate(images)]


def sample_name(seed: int, index: int) -> str:
    """File name of sample ``index`` of the batch drawn with ``seed``."""
    return f"seed{seed}_{index}.png"


def sample_to_folder(fn: SampleFn, n: int, out_dir: str | os.PathLike[str], batch: int = 64, seed0: int = 0,
                     progress: ProgressFn | None = None, writers: int = 2,
                     compress_level: int = 1) -> list[tuple[Path, int]]:
    """Draw ``n`` samples from ``fn`` in batches and save each as PNG in ``out_dir``; returns (path, seed)
    per sample, where seed is the one passed to ``fn`` for its batch (its index is in the file name and
    in ``samples.csv``). With ``writers`` > 0 the PNG files of a batch are written in that many threads while
    the next batch is drawn; 0 writes them in the calling thread."""
    if n < 1:
        raise IdleakError(f"--n must be at least 1, got {n}")
    if batch < 1:
        raise IdleakError(f"--batch-size must be at least 1, got {batch}")
    if writers < 0:
        raise IdleakError(f"writers must be 0 or more, got {writers}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[tuple[Path, int]] = []
    rows: list[tuple[str, int, int, int]] = []
    pending: list[Future] = []
    if progress:
        progress(0, n)
    pool = ThreadPoolExecutor(writers) if writers > 0 else None
    try:
        done = 0
        while done < n:
            size = min(batch, n - done)
            seed = seed0 + done
            images = call_batch(fn, size, seed)
            paths = [out_dir / sample_name(seed, j) for j in range(size)]
            if pool is None:
                _save_batch(images, paths, compress_level)
            else:
                pending.append(pool.submit(_save_batch, images, paths, compress_level))
            results.extend((path, seed) for path in paths)
            rows.extend((path.name, seed, j, size) for j, path in enumerate(paths))
            done += size
            pending = _drain(pending, keep=2 * max(1, writers))
            if progress:
                progress(done, n)
        _drain(pending, keep=0)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    with open(out_dir / "samples.csv", "w", encoding="utf-8") as handle:
        handle.write(",".join(SAMPLE_COLUMNS) + "\n")
        handle.writelines(f"{name},{seed},{j},{size}\n" for name, seed, j, size in rows)
    return results


def is_sample_list(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a ``samples.csv`` written by ``sample_to_folder``."""
    path = Path(path)
    if path.name != "samples.csv" or not path.is_file():
        return False
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.readline().strip() == ",".join(SAMPLE_COLUMNS)


def without_sample_list(source: Source) -> Source:
    """A folder source without the ``samples.csv`` that ``sample_to_folder`` put beside the images (it is
    not an image), so a sample folder can be given as a folder."""
    if source.kind != "folder":
        return source
    records = [r for r in source.records if not is_sample_list(r.path)]
    return source if len(records) == len(source.records) else Source(source.spec, source.kind, records)


def _save_batch(images: list[np.ndarray], paths: list[Path], compress_level: int) -> None:
    for image, path in zip(images, paths):
        Image.fromarray(image).save(path, format="PNG", compress_level=compress_level)


def _drain(pending: list[Future], keep: int) -> list[Future]:
    """Wait for the oldest writes until at most ``keep`` are in flight (bounded memory); re-raise errors."""
    while len(pending) > keep:
        pending.pop(0).result()
    return pending


def throughput(fn: SampleFn, n: int, batch: int, seed0: int = 0) -> float:
    """Samples per second of calling ``fn`` directly in batches (no saving), for benchmarks."""
    start = time.perf_counter()
    done = 0
    while done < n:
        size = min(batch, n - done)
        list(fn(size, seed0 + done))
        done += size
    return n / (time.perf_counter() - start)

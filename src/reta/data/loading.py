"""Data throughput for file datasets: DataLoader settings, parallel ``gather`` and the decode-once cache.

Every stage reads real images through :class:`~reta.data.base.ImageDataset` — training loaders (teacher squeeze) and
``gather(indices)`` (patch-pool scoring, the DRC/PTA pools, the DM real sampler, random subsets, test accuracy). For
in-memory datasets (IDX, CIFAR) both are tensor indexing. For file datasets (ImageFolder, Tiny-ImageNet) each image is
a JPEG decode + resize, which this module spreads over cores and, optionally, does only once:

* :func:`configure` reads the ``data`` config (``num_workers``: ``auto`` = CPU count − 1, at most 8; ``pin_memory``;
  ``persistent_workers``; ``decode_cache``) once per stage; :func:`train_loader_kwargs` gives torch ``DataLoader``
  keyword arguments (worker processes, pinned memory, persistent workers, prefetch) for file datasets;
* :func:`parallel_map` decodes the images of one ``gather`` call on a thread pool of ``num_workers`` threads (Pillow
  releases the GIL while decoding and resizing, so threads scale without the start-up and pickling cost of a
  process pool per call);
* :func:`build_decode_cache` writes a split once as a memory-mapped uint8 ``.npy`` ``[N, C, S, S]`` under
  ``<cache_dir>/decoded/``, keyed by dataset + split + size + the file list with each file's byte size and
  modification time (an image edited in place gets a new cache), written atomically; :func:`usable_cache` checks an
  existing file's header (count, shape, dtype) and a few decoded images against it before it is used (a torn or
  garbage file is rebuilt). A dataset with the cache attached reads pixels by index (bit-identical to decoding: both
  are uint8 / 255).

Own code only for the cache file: torchvision and Lightning have no decode-once store of resized uint8 tensors.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reta.errors import RetaError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadingOptions:
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = True
    prefetch_factor: int = 2
    decode_cache: bool = False
    cache_dir: str | None = None


_OPTIONS = LoadingOptions()
_POOL: ThreadPoolExecutor | None = None


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def configure(data_cfg: Any, cache_dir: str | None = None, cuda: bool = False) -> LoadingOptions:
    """Set the process-wide options from the ``data`` config (None: defaults) and return them."""
    global _OPTIONS, _POOL
    d = dict(data_cfg or {})
    unknown = sorted(set(d) - {"num_workers", "pin_memory", "persistent_workers", "prefetch_factor", "decode_cache"})
    if unknown:
        raise RetaError(f"data: unknown keys {unknown}; valid: decode_cache, num_workers, persistent_workers, "
                        "pin_memory, prefetch_factor")
    workers = d.get("num_workers", "auto")
    if workers in (None, "auto"):
        workers = max(0, min(8, cpu_count() - 1))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise RetaError(f"data.num_workers must be 'auto' or an integer >= 0, got {workers!r}")
    pin = d.get("pin_memory", "auto")
    pin = cuda if pin in (None, "auto") else bool(pin)
    opts = LoadingOptions(int(workers), pin, bool(d.get("persistent_workers", True)),
                          int(d.get("prefetch_factor", 2) or 2), bool(d.get("decode_cache", False)),
                          None if cache_dir is None else str(cache_dir))
    if opts.decode_cache and not opts.cache_dir:
        raise RetaError("data.decode_cache=true needs paths.cache_dir")
    if _POOL is not None and opts.num_workers != _OPTIONS.num_workers:
        _POOL.shutdown(wait=True)
        _POOL = None
    _OPTIONS = opts
    return opts


def options() -> LoadingOptions:
    return _OPTIONS


def train_loader_kwargs(num_workers: int | None = None) -> dict:
    """DataLoader kwargs for a file dataset under the current options (``num_workers`` overrides them)."""
    o = _OPTIONS
    w = o.num_workers if num_workers is None else int(num_workers)
    kw: dict = {"num_workers": w, "pin_memory": o.pin_memory}
    if w > 0:
        kw.update(persistent_workers=o.persistent_workers, prefetch_factor=o.prefetch_factor)
    return kw


def parallel_map(fn: Callable[[int], torch.Tensor], indices: Sequence[int]) -> list[torch.Tensor]:
    """``[fn(i) for i in indices]`` on the thread pool (in order); sequential with 0 workers or one index."""
    global _POOL
    if _OPTIONS.num_workers <= 0 or len(indices) < 2:
        return [fn(int(i)) for i in indices]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_OPTIONS.num_workers, thread_name_prefix="reta-decode")
    return list(_POOL.map(fn, [int(i) for i in indices]))


def cache_file(cache_dir: str | Path, name: str, split: str, paths: Sequence[str], mode: str, size: int) -> Path:
    """``<cache_dir>/decoded/<name>_<split>_<size>px_<key>.npy``; the key hashes the file list (each path with its byte
    size and modification time in ns), mode and size."""
    h = hashlib.sha256(f"{mode}|{size}|{len(paths)}".encode())
    for p in paths:
        try:
            st = os.stat(p)
            stamp = f"|{st.st_size}|{st.st_mtime_ns}"
        except OSError:  # unreadable now: decoding it names the file
            stamp = "|missing"
        h.update(p.encode() + stamp.encode())
        h.update(b"\0")
    return Path(cache_dir) / "decoded" / f"{name}_{split}_{size}px_{h.hexdigest()[:12]}.npy"


def usable_cache(path: Path, n: int, shape: tuple[int, ...], probes: dict[int, np.ndarray]) -> bool:
    """Whether the cache file ``path`` holds ``n`` uint8 images of ``shape`` whose images at the ``probes`` indices
    equal the freshly decoded ones; a missing, torn or foreign file is not (a warning names the reason)."""
    if not path.is_file():
        return False
    try:
        mm = np.load(path, mmap_mode="r")
        ok = mm.dtype == np.uint8 and tuple(mm.shape) == (n, *shape)
        why = f"holds {mm.dtype} {tuple(mm.shape)}, expected uint8 {(n, *shape)}"
        if ok:
            bad = [i for i, arr in probes.items() if not np.array_equal(mm[i], arr)]
            ok, why = not bad, f"its image {bad[0] if bad else ''} differs from the decoded file"
        del mm
    except (OSError, ValueError) as err:
        ok, why = False, f"unreadable ({err})"
    if not ok:
        log.warning("decode cache %s %s: rebuilding it", path, why)
    return ok


def build_decode_cache(path: Path, n: int, shape: tuple[int, int, int], decode: Callable[[int], np.ndarray],
                       chunk: int = 256) -> Path:
    """Write ``decode(i)`` (uint8 ``shape``) for ``i < n`` into ``path`` (a .npy, via a temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # the usual permissions (mkstemp's 0600 hides a shared cache from other users)
    try:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *shape))
        for start in range(0, n, chunk):
            idx = list(range(start, min(start + chunk, n)))
            for i, arr in zip(idx, parallel_map(decode, idx)):
                mm[i] = arr
        mm.flush()
        del mm
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("decode cache: %d images -> %s", n, path)
    return path

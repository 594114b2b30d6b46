"""Atomic writes of files (a temporary file in the destination's directory, then ``os.replace``) and of directories
(:func:`atomic_directory`).

A reader therefore sees either the old file or the complete new one, never a torn write; a failure
removes the temporary file and leaves the old file untouched. A full or read-only disk (ENOSPC, EDQUOT, EROFS, or
torch's C++ writer failing) becomes one line (:class:`WriteError`) saying what was kept.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

from reta.errors import RetaError

_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class WriteError(RetaError):
    """A write failed because the disk is full or read-only; the message says what was kept."""


def write_failure(err: BaseException, path: Path) -> WriteError | None:
    """The one-line error for a write of ``path`` that failed with ``err`` on a full or read-only disk, else None."""
    if isinstance(err, OSError) and err.errno in _DISK_ERRNOS:
        reason = os.strerror(err.errno)
    elif isinstance(err, RuntimeError) and ("basic_ios" in str(err) or "file write failed" in str(err)):
        reason = "the write failed (disk full or read-only?)"
    else:
        return None
    kept = "keeps its previous version" if os.path.lexists(path) else "was not created"
    return WriteError(f"cannot write {path}: {reason}; nothing half-written was left ({path.name} {kept}); free "
                      "space or choose another directory and rerun (resume=true continues a synthesis from its last "
                      "checkpoint)")


def json_default(obj: Any) -> Any:
    """``json.dumps(default=…)`` for the values metadata tends to contain: paths, tensors, numpy values."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def _atomic(path: str | os.PathLike, mode: str, write: Callable[[IO], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # open(..., "x") rather than mkstemp: the file gets the usual umask permissions, not 0600
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(tmp, mode.replace("w", "x")) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        failure = write_failure(err, path)
        if failure is not None:
            raise failure from err
        raise
    return path


def _sanitize_nonfinite(obj: Any) -> Any:
    """NaN/inf floats → None, so the file is strict JSON that every parser accepts."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _sanitize_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize_nonfinite(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented UTF-8 JSON (NaN/inf written as null) atomically; returns the path."""
    text = json.dumps(
        _sanitize_nonfinite(json.loads(json.dumps(obj, default=json_default))), indent=2, allow_nan=False
    )
    return _atomic(path, "w", lambda f: f.write(text + "\n"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically; returns the path."""
    return _atomic(path, "wb", lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return _atomic(path, "w", lambda fh: fh.write(text))


def _swap_in(tmp: Path, out: Path, old: Path, tries: int = 100) -> None:
    """Rename ``tmp`` to ``out``, moving an existing ``out`` aside to ``old`` first (restored if the final rename
    fails). Concurrent writers of one ``out`` may move it away, or land theirs, between our two renames: then we try
    again (the last writer wins; every writer's directory is complete)."""
    for _ in range(tries):
        if not os.path.lexists(out):
            try:
                os.rename(tmp, out)
                return
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                continue  # another writer's directory landed first: replace it
        try:
            os.rename(out, old)
        except FileNotFoundError:
            continue  # another writer moved it away meanwhile
        try:
            os.rename(tmp, out)
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                os.rename(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)  # another writer's directory landed in between: ours goes on top
            continue
        shutil.rmtree(old, ignore_errors=True)
        return
    raise OSError(errno.EBUSY, f"{out} kept changing under {tries} concurrent renames")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Write a directory atomically: ``with atomic_directory(out) as tmp:`` fill ``tmp`` (a sibling of ``out``);
    on success ``tmp`` replaces ``out`` (an existing ``out`` is renamed aside first and restored if the final
    rename fails), on any exception ``tmp`` is removed and ``out`` is left as it was. The one directory writer of
    the distilled sets, teacher cache entries and stored soft labels."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    os.mkdir(tmp)  # not mkdtemp: the final dir gets the usual umask permissions
    try:
        yield tmp
        _swap_in(tmp, out, out.parent / f".{out.name}.old-{tag}")
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        failure = write_failure(err, out)
        if failure is not None:
            raise failure from err
        raise

"""Checks on a run's output directory that run before any work and write nothing.

A run that would fail when it first writes (``paths.output_dir`` names a file, a parent or the dir itself cannot be
written, ``distilled/`` inside it is read-only) is refused at start with one line instead of a traceback after the
synthesis. ``os.access`` cannot answer this (root passes every permission check, read-only or virtual file systems
refuse root too), so the check tries what the run will do: create a directory in the deepest existing ancestor and
in every existing artifact subdir, and remove it at once. Nothing remains whether the check passes or fails.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from reta.errors import RetaError


def _deepest_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _probe(directory: Path, what: str, way_out: str = "choose another paths.output_dir") -> None:
    """Create and remove an empty directory in ``directory``; one line naming ``what`` on failure."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".reta-probe-", dir=directory))
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise RetaError(f"cannot write to {what} ({reason}); {way_out}") from None


def check_writable_cache(cfg) -> None:
    """``paths.cache_dir`` is, or can be created as, a writable directory: teachers, backbones and statistics are
    written there after they are computed, so an unwritable cache must stop the run before that work."""
    cache = (cfg.get("paths") or {}).get("cache_dir")
    if not cache:
        return
    cache = Path(str(cache)).expanduser().absolute()
    base = _deepest_existing(cache)
    if not base.is_dir():
        raise RetaError(f"paths.cache_dir {cache}: {base} is a file, not a directory; choose another paths.cache_dir")
    _probe(base, f"paths.cache_dir {cache}" if base == cache else f"{base} (to create paths.cache_dir {cache})",
           "choose another paths.cache_dir")


def check_writable_dir(out: str | os.PathLike, subdirs: Iterable[str] = ()) -> None:
    """``out`` is, or can be created as, a writable directory, and its existing ``subdirs`` are writable."""
    out = Path(out).absolute()
    base = _deepest_existing(out)
    if base == out and not out.is_dir():
        raise RetaError(f"paths.output_dir {out} exists and is not a directory; choose another paths.output_dir")
    if not base.is_dir():
        raise RetaError(f"paths.output_dir {out}: its parent {base} is a file, not a directory; "
                        "choose another paths.output_dir")
    _probe(base, f"paths.output_dir {out}" if base == out else f"{base} (to create paths.output_dir {out})")
    for name in subdirs:
        sub = out / name
        if sub.is_dir():
            _probe(sub, str(sub))
        elif os.path.lexists(sub):
            raise RetaError(f"{sub} exists and is not a directory; move it away or choose another paths.output_dir")


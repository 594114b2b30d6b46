"""Keyed results of student runs that do not depend on the distilled set, stored as JSON under
``${paths.cache_dir}/<kind>/<dataset>_<digest>.json``: the full-data student (:mod:`reta.evaluation.full_data`) and
the random real subset's students (``baseline_cache: true``, :mod:`reta.evaluation.students`). Every job of a table
grid evaluates the random subset of its IPC beside its method's set under the identical protocol; the students of
one (dataset, IPC, seed, student, protocol, teacher, trainer, add-ons, split) recipe are the same runs, so the first
job trains them and the others read them (jobs that start together, under a parallel or SLURM launcher, each train
them; the last writer's entry stays). An entry is used only when its stored key equals the run's key in full (a
digest collision recomputes); the key includes :data:`STUDENT_CODE_VERSION`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from reta.errors import RetaError
from reta.utils.cache_files import read_json
from reta.utils.config import config_digest
from reta.utils.io import atomic_write_json

log = logging.getLogger(__name__)

#: part of every key: raise it when a change to student training (reta.training.student, the evaluators) changes the
#: numbers a recipe gives, so entries written by the earlier code are not read back as this code's
STUDENT_CODE_VERSION = 1

def check_cache_mode(mode, name: str) -> None:
    """``mode`` is true (read or write), false (neither) or ``refresh`` (train again and replace the entry)."""
    if not (isinstance(mode, bool) or mode == "refresh"):
        raise RetaError(f"{name} must be true, false or refresh, got {mode!r}")


def canonical(key: dict) -> dict:
    """``key`` as it reads back from JSON (tuples → lists, keys sorted), so stored and new keys compare equal."""
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def entry_path(cache_dir: str | Path, kind: str, key: dict) -> Path:
    name = (key.get("dataset") or {}).get("name", "data")
    return Path(cache_dir) / kind / f"{name}_{config_digest(key)}.json"


def cached_run(cache_dir: str | Path, kind: str, key: dict, compute: Callable[[], dict], mode=True) -> dict:
    """``compute()`` (a JSON-able dict), or the stored result of the same ``key`` (``mode`` true); ``refresh``
    computes and replaces the entry, false computes and stores nothing. The result carries ``cached`` unless
    ``mode`` is false."""
    if mode is False:
        return compute()
    key = {**key, "code_version": STUDENT_CODE_VERSION}
    entry, key = entry_path(cache_dir, kind, key), canonical(key)
    if entry.is_file() and mode != "refresh":
        stored = read_json(entry)
        if stored.get("key") == key:
            log.info("%s student from the cache: %s", kind, entry)
            return {**stored["result"], "cached": True}
        log.warning("%s cache entry %s belongs to another recipe; recomputing", kind, entry)
    result = canonical(compute())
    atomic_write_json(entry, {"key": key, "result": result})
    return {**result, "cached": False}

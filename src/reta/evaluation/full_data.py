"""The full-data student: the evaluation protocol's student trained on the whole training split — the upper bound
of DD-Ranking's hard-label recovery (HLR = Acc(full, hard) − Acc(set, hard); DD-Ranking
``ddranking/metrics/hard_label.py`` ``eval_full_data``). Computed once per student recipe and cached as JSON under
``${paths.cache_dir}/full_data/<key>.json``, keyed by dataset + student + protocol + seed + evaluation split."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from reta.data.base import ImageDataset
from reta.errors import RetaError
from reta.training.student import Protocol
from reta.utils.cache_files import read_json
from reta.utils.config import config_digest
from reta.utils.io import atomic_write_json

log = logging.getLogger(__name__)


def full_data_key(dataset_cfg: Mapping, student_cfg: Mapping, protocol: Protocol, seed: int, eval_split: str,
                  teacher: str | None = None) -> dict:
    """Everything the full-data accuracy depends on (the cache key's content); ``teacher``: the KD teacher's name."""
    return {"dataset": dict(dataset_cfg), "student": dict(student_cfg), "protocol": protocol_key(protocol),
            "seed": int(seed), "eval_split": eval_split, "teacher": teacher}


def protocol_key(protocol: Protocol) -> dict:
    """The protocol's fields in the key; ``committee`` only when a committee labels (a key without it means the
    run's teacher, so the keys of single-teacher runs do not depend on the option)."""
    values = dataclasses.asdict(protocol)
    if values.get("committee") is None:
        values.pop("committee", None)
    return values


def _entry(cache_dir: str | Path, key: dict) -> Path:
    return Path(cache_dir) / "full_data" / f"{key['dataset'].get('name', 'data')}_{config_digest(key)}.json"


def full_data_run(train: ImageDataset, protocol: Protocol, epochs: int | None, seed: int, cache_dir: str | Path,
                  key: dict, train_fn: Callable[..., dict]) -> dict:
    """``train_fn(images, labels, protocol=…, seed=…, run_name=…)`` on every image of ``train`` (``epochs``
    overrides the protocol's, null keeps it), or the cached result of the same key. Returns the run's dict
    (``acc_last``, ``acc_best``, ``seconds``, ``cached``)."""
    if epochs is not None:
        if int(epochs) <= 0:
            raise RetaError(f"full_data.epochs must be a positive integer or null, got {epochs}")
        protocol = dataclasses.replace(protocol, epochs=int(epochs))
    key = {**key, "protocol": protocol_key(protocol)}  # with the epochs actually trained
    entry = _entry(cache_dir, key)
    if entry.is_file():
        stored = read_json(entry)
        if json.loads(json.dumps(key, sort_keys=True, default=str)) == stored.get("key"):
            log.info("full-data student from the cache: %s", entry)
            return {**stored["result"], "cached": True}
        log.warning("full-data cache entry %s belongs to another recipe; recomputing", entry)
    idx = torch.arange(len(train))
    r = train_fn(train.gather(idx), train.targets.clone(), protocol=protocol, seed=seed, run_name=f"full_seed{seed}")
    result = {"acc_last": r["acc_last"], "acc_best": r["acc_best"], "seconds": r["seconds"]}
    atomic_write_json(entry, {"key": json.loads(json.dumps(key, sort_keys=True, default=str)), "result": result})
    return {**result, "cached": False}

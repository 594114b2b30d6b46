"""The full-data student: the evaluation protocol's student trained on the whole training split — the upper bound
of DD-Ranking's hard-label recovery (HLR = Acc(full, hard) − Acc(set, hard); DD-Ranking
``ddranking/metrics/hard_label.py`` ``eval_full_data``). Computed once per student recipe and cached as JSON under
``${paths.cache_dir}/full_data/<key>.json``, keyed by dataset + student + protocol + seed + evaluation split."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from reta.data.base import ImageDataset
from reta.data.registry import dataset_identity
from reta.errors import RetaError
from reta.evaluation.student_cache import cached_run
from reta.training.student import Protocol


def full_data_key(dataset_cfg: Mapping, student_cfg: Mapping, protocol: Protocol, seed: int, eval_split: str,
                  teacher: Mapping | str | None = None) -> dict:
    """Everything the full-data accuracy depends on (the cache key's content): the dataset's identity (not where its
    files are: :func:`reta.data.registry.dataset_identity`), the student (``kwargs: null`` read as ``{}``), the
    protocol, seed, split and ``teacher``, the labelling teacher's identity
    (:func:`reta.evaluation.students.teacher_identity`), None for hard labels."""
    student = {**student_cfg, "kwargs": dict(student_cfg.get("kwargs") or {})}
    return {"dataset": dataset_identity(dataset_cfg), "student": student, "protocol": protocol_key(protocol),
            "seed": int(seed), "eval_split": eval_split, "teacher": teacher}


def protocol_key(protocol: Protocol) -> dict:
    """The protocol's fields in the key; ``committee`` only when a committee labels (a key without it means the
    run's teacher, so the keys of single-teacher runs do not depend on the option)."""
    values = dataclasses.asdict(protocol)
    if values.get("committee") is None:
        values.pop("committee", None)
    return values


def full_data_run(train: ImageDataset, protocol: Protocol, epochs: int | None, seed: int, cache_dir: str | Path,
                  key: dict, train_fn: Callable[..., dict]) -> dict:
    """``train_fn(images, labels, protocol=…, seed=…, run_name=…)`` on every image of ``train`` (``epochs``
    overrides the protocol's, null keeps it), or the cached result of the same key
    (:func:`reta.evaluation.student_cache.cached_run`). Returns the run's dict (``acc_last``, ``acc_best``,
    ``seconds``, ``cached``)."""
    if epochs is not None:
        if int(epochs) <= 0:
            raise RetaError(f"full_data.epochs must be a positive integer or null, got {epochs}")
        protocol = dataclasses.replace(protocol, epochs=int(epochs))
    key = {**key, "protocol": protocol_key(protocol)}  # with the epochs actually trained

    def fit() -> dict:
        idx = torch.arange(len(train))
        r = train_fn(train.gather(idx), train.targets.clone(), protocol=protocol, seed=seed,
                     run_name=f"full_seed{seed}")
        return {"acc_last": r["acc_last"], "acc_best": r["acc_best"], "seconds": r["seconds"]}

    return cached_run(cache_dir, "full_data", key, fit)

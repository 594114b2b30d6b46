"""Distill stage as a plain function: ``run(cfg) -> dict`` writes ``<output_dir>/distilled/`` (format v1)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path

from omegaconf import DictConfig, open_dict

import reta
from reta.data.distilled import save_distilled
from reta.data.holdout import check_holdout, split_holdout
from reta.data.registry import load_split
from reta.errors import RetaError
from reta.synthesis.bn.sharding import SHARDABLE_KINDS, ShardInfo, init_distributed
from reta.synthesis.registry import DistillContext, get_kind
from reta.tracking import log_distilled_artifact
from reta.training.common import set_threads
from reta.training.teacher_cache import get_teacher
from reta.utils.config import output_dir, plain, require_positive_int


def config_hash(cfg: DictConfig) -> str:
    keep = {k: plain(cfg[k]) for k in ("dataset", "model", "recipe", "method", "ipc", "seed") if k in cfg}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:12]


def teacher_cfg(cfg: DictConfig) -> DictConfig:
    """``cfg`` as the teacher sees it: ``teacher.seed`` (when set) replaces ``seed``, so one cached teacher serves
    synthesis runs of several seeds (``+teacher.seed=0``); otherwise the run's seed is the teacher's seed."""
    seed = cfg.teacher.get("seed") if "teacher" in cfg else None
    if seed is None:
        return cfg
    sub = cfg.copy()
    with open_dict(sub):
        sub.seed = int(seed)
    return sub


class TeacherLoader:
    """``load(model_cfg)`` → the cached (or freshly squeezed) teacher of that architecture for this dataset.

    ``load.seconds`` is the wall time spent in it and in ``with load.timing():`` blocks (loading, or squeezing a
    teacher not cached yet), so that a set's ``synthesis_seconds`` can leave out teacher training done on first use
    (recorded as ``teacher_seconds``)."""

    def __init__(self, cfg: DictConfig, train, test) -> None:
        self.base, self.train, self.test = teacher_cfg(cfg), train, test
        self.seconds = 0.0

    @contextlib.contextmanager
    def timing(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start

    def __call__(self, model_cfg):
        with self.timing():
            if model_cfg is None:
                return get_teacher(self.base, self.train, self.test)
            sub = self.base.copy()
            with open_dict(sub):
                sub.model = plain(model_cfg)  # replace, not merge: another architecture's kwargs
            return get_teacher(sub, self.train, self.test)


def run(cfg: DictConfig) -> dict:
    """Synthesise and write the set. With ``distributed.enabled=true`` and several ranks in the environment
    (torchrun / srun, :mod:`reta.synthesis.bn.sharding`) the jobs are sharded; only rank 0 writes ``distilled/``, the
    other ranks return a summary with ``distilled: None``."""
    shard = init_distributed(cfg)
    try:
        return _run(cfg, shard)
    finally:
        shard.destroy()


def _run(cfg: DictConfig, shard: ShardInfo) -> dict:
    set_threads(cfg.get("num_threads"))
    ipc = require_positive_int(cfg.ipc, "ipc")
    kind = cfg.method.get("kind")
    if shard.sharded and kind not in SHARDABLE_KINDS:
        raise RetaError(f"distributed.enabled=true shards only {', '.join(SHARDABLE_KINDS)} methods, not {kind!r} "
                        f"(method {cfg.method.name}); run it in one process")
    fn = get_kind(kind)
    holdout = check_holdout(cfg.get("holdout_per_class", 0))
    full_train = load_split(cfg.dataset, "train", cfg.paths.data_dir)
    test = load_split(cfg.dataset, "test", cfg.paths.data_dir)
    train, _ = split_holdout(full_train, holdout)  # synthesis never sees the held-out images
    smallest = int(min((train.targets == c).sum() for c in range(int(cfg.dataset.num_classes))))
    if ipc > smallest:
        raise RetaError(f"ipc={ipc} exceeds the smallest class of {cfg.dataset.name} ({smallest} images)")
    out = Path(shard.broadcast(str(output_dir(cfg))))  # sharded: every rank uses rank 0's run dir
    ckpt_dir = out / "checkpoints" / shard.checkpoint_subdir() if shard.sharded else out / "checkpoints"
    load = TeacherLoader(cfg, full_train, test)  # teachers: the whole training split (one cache entry)
    ctx = DistillContext(train, test, out, ckpt_dir, load, shard=shard, teacher_timing=load.timing)
    start = time.perf_counter()
    result = fn(cfg, ctx)
    seconds = time.perf_counter() - start - load.seconds
    ds = plain(cfg.dataset)
    meta = {
        "dataset": ds["name"],
        "num_classes": ds["num_classes"],
        "ipc": ipc,
        "mean": ds["mean"],
        "std": ds["std"],
        "method": cfg.method.name,
        "method_config": plain(cfg.method),
        "seed": int(cfg.seed),
        "config_hash": config_hash(cfg),
        "package_version": reta.__version__,
        "synthesis_seconds": round(seconds, 2),  # without teacher_seconds (teachers squeezed on first use)
        "teacher_seconds": round(load.seconds, 2),
        "shards": shard.world,
        "holdout_per_class": holdout,
        **result.meta,
    }
    if not shard.is_main:  # rank 0 writes the merged set
        return {"distilled": None, "rank": shard.rank, "shards": shard.world, "seconds": seconds,
                "method": cfg.method.name, "ipc": ipc}
    path = save_distilled(out / "distilled", result.images, result.labels, meta, result.soft_labels, class_names=ds["class_names"] or train.class_names)
    print(f"distilled set ({cfg.method.name}, IPC {ipc}): {path}  grid: {path / 'grid.png'}")
    artifact = log_distilled_artifact(plain(cfg.logger), out, path, meta)
    return {"distilled": str(path), "seconds": seconds, "wandb_artifact": artifact,
            **{k: v for k, v in meta.items() if k != "method_config"}}

"""Distill stage as a plain function: ``run(cfg) -> dict`` writes ``<output_dir>/distilled/`` (format v1)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from omegaconf import DictConfig

import reta
from reta.data.distilled import save_distilled
from reta.data.registry import load_split
from reta.errors import RetaError
from reta.synthesis.bn.sharding import ShardInfo, init_distributed
from reta.synthesis.registry import DistillContext, is_shardable, synthesis_function
from reta.tracking import log_distilled_artifact
from reta.training.common import set_threads
from reta.training.teacher_cache import TeacherLoader
from reta.utils.config import output_dir, plain, require_positive_int


def config_hash(cfg: DictConfig) -> str:
    keep = {k: plain(cfg[k]) for k in ("dataset", "model", "recipe", "method", "ipc", "seed") if k in cfg}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:12]


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
    fn = synthesis_function(cfg.method)
    check = getattr(getattr(fn, "func", fn), "check_config", None)
    if check is not None:  # the family's config (keys, types, ranges) before any data or teacher is loaded
        check(cfg)
    if shard.sharded and not is_shardable(fn):
        raise RetaError(f"distributed.enabled=true shards only BN-matching methods (sre2l, fadrm, fadrm_plus, reta), "
                        f"not {cfg.method.name}; run it in one process")
    train = load_split(cfg.dataset, "train", cfg.paths.data_dir)
    test = load_split(cfg.dataset, "test", cfg.paths.data_dir)
    smallest = int(min((train.targets == c).sum() for c in range(int(cfg.dataset.num_classes))))
    if ipc > smallest:
        raise RetaError(f"ipc={ipc} exceeds the smallest class of {cfg.dataset.name} ({smallest} images)")
    out = Path(shard.broadcast(str(output_dir(cfg))))  # sharded: every rank uses rank 0's run dir
    ckpt_dir = out / "checkpoints" / shard.checkpoint_subdir() if shard.sharded else out / "checkpoints"
    load = TeacherLoader(cfg, train, test)
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

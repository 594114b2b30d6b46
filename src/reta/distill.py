"""Distill stage as a plain function: ``run(cfg) -> dict`` writes ``<output_dir>/distilled/`` (format v1)."""

from __future__ import annotations

import hashlib
import json
import time

from omegaconf import DictConfig, OmegaConf

import reta
from reta.data.distilled import save_distilled
from reta.data.registry import load_split
from reta.errors import RetaError
from reta.squeeze import get_teacher
from reta.synthesis.registry import DistillContext, get_kind
from reta.training.common import set_threads
from reta.utils.config import output_dir, plain, require_positive_int


def config_hash(cfg: DictConfig) -> str:
    keep = {k: plain(cfg[k]) for k in ("dataset", "model", "recipe", "method", "ipc", "seed") if k in cfg}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:12]


def teacher_loader(cfg: DictConfig, train, test):
    """``load(model_cfg)`` → the cached (or freshly squeezed) teacher of that architecture for this dataset."""

    def load(model_cfg):
        sub = OmegaConf.merge(cfg, {"model": plain(model_cfg)}) if model_cfg is not None else cfg
        return get_teacher(sub, train, test)

    return load


def run(cfg: DictConfig) -> dict:
    set_threads(cfg.get("num_threads"))
    ipc = require_positive_int(cfg.ipc, "ipc")
    kind = cfg.method.get("kind")
    fn = get_kind(kind)
    train = load_split(cfg.dataset, "train", cfg.paths.data_dir)
    test = load_split(cfg.dataset, "test", cfg.paths.data_dir)
    smallest = int(min((train.targets == c).sum() for c in range(int(cfg.dataset.num_classes))))
    if ipc > smallest:
        raise RetaError(f"ipc={ipc} exceeds the smallest class of {cfg.dataset.name} ({smallest} images)")
    out = output_dir(cfg)
    ctx = DistillContext(train, test, out, out / "checkpoints", teacher_loader(cfg, train, test))
    start = time.perf_counter()
    result = fn(cfg, ctx)
    seconds = time.perf_counter() - start
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
        "synthesis_seconds": round(seconds, 2),
        **result.meta,
    }
    path = save_distilled(out / "distilled", result.images, result.labels, meta, result.soft_labels, class_names=ds["class_names"] or train.class_names)
    print(f"distilled set ({cfg.method.name}, IPC {ipc}): {path}  grid: {path / 'grid.png'}")
    return {"distilled": str(path), "seconds": seconds, **{k: v for k, v in meta.items() if k != "method_config"}}

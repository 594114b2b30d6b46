"""Experts stage as a plain function: ``run(cfg) -> dict`` trains (or finds by its key) the expert-trajectory buffer
of ``method.experts`` / ``method.net`` for MTT (:mod:`reta.training.experts`) and writes ``experts.json`` — the
recipe, parameter layout, per-expert test accuracies, build time and cache key."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from reta.data.holdout import check_holdout, split_holdout
from reta.data.registry import load_split
from reta.training.common import configure_data, set_threads
from reta.training.experts import ExpertRecipe, expert_buffer, recipe_of
from reta.utils.config import output_dir, plain, planned_output_dir
from reta.utils.io import atomic_write_json
from reta.utils.outputs import check_writable_dir


def preflight(cfg: DictConfig, out: Path) -> ExpertRecipe:
    """Checks that need no data and write nothing: the method's expert recipe, ``out`` can be written."""
    recipe = recipe_of(plain(cfg.method))
    check_holdout(cfg.get("holdout_per_class", 0))
    check_writable_dir(out)
    return recipe


def run(cfg: DictConfig) -> dict:
    """Build or find the expert buffer, write ``experts.json`` into the output dir, return its meta."""
    preflight(cfg, planned_output_dir(cfg))
    set_threads(cfg.get("num_threads"))
    configure_data(cfg)
    holdout = check_holdout(cfg.get("holdout_per_class", 0))
    train, _ = split_holdout(load_split(cfg.dataset, "train", cfg.paths.data_dir), holdout)
    test = load_split(cfg.dataset, "test", cfg.paths.data_dir)
    out = output_dir(cfg)
    buf = expert_buffer(cfg, train, test, out)
    meta = {**buf.meta, "entry": buf.entry.name}
    atomic_write_json(out / "experts.json", meta)
    r = meta["recipe"]
    print(f"{r['num_experts']} experts x {r['epochs']} epochs of {meta['model']['name']} on {meta['dataset']}: "
          f"{meta['build_seconds']} s to build, key {buf.entry.name}")
    return meta

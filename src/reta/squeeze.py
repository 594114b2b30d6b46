"""Squeeze stage as a plain function: ``run(cfg) -> dict`` trains or loads the teacher of ``cfg`` (cached by
:mod:`reta.training.teacher_cache`) and writes ``teacher.json``."""

from __future__ import annotations

from omegaconf import DictConfig

from reta.training.common import configure_data, set_threads
from reta.training.teacher_cache import get_teacher
from reta.utils.config import output_dir
from reta.utils.io import atomic_write_json


def run(cfg: DictConfig) -> dict:
    """Train or load the teacher, write ``teacher.json`` into the output dir, return its meta."""
    set_threads(cfg.get("num_threads"))
    configure_data(cfg)
    _, meta = get_teacher(cfg)
    out = output_dir(cfg)
    atomic_write_json(out / "teacher.json", meta)
    print(f"teacher {meta['name']} on {meta['dataset']}: test acc {meta['test_acc']:.4f}  ({meta.get('source')})")
    return meta

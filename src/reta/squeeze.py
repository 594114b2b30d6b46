"""Squeeze stage as a plain function: ``run(cfg) -> dict`` trains or loads the teacher of ``cfg`` (cached by
:mod:`reta.training.teacher_cache`) and writes ``teacher.json``."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from reta.errors import CheckpointError, RetaError
from reta.training.common import configure_data, set_threads
from reta.training.teacher_cache import get_teacher
from reta.utils.config import output_dir, planned_output_dir
from reta.utils.io import atomic_write_json
from reta.utils.outputs import check_writable_cache, check_writable_dir


def preflight(cfg: DictConfig, out: Path) -> None:
    """Checks that need no data and write nothing: ``teacher.checkpoint`` is a file, ``out`` can be written."""
    ckpt = (cfg.get("teacher") or {}).get("checkpoint")
    if ckpt and not Path(str(ckpt)).is_file():
        raise CheckpointError(f"teacher.checkpoint {ckpt} does not exist")
    check_writable_dir(out)
    check_writable_cache(cfg)
    _check_previous_teacher(cfg, out)


def _check_previous_teacher(cfg: DictConfig, out: Path) -> None:
    """A ``teacher.json`` of another model in ``out`` is replaced only with ``overwrite=true``."""
    try:
        previous = json.loads((out / "teacher.json").read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        return
    model = (cfg.get("model") or {}).get("name")
    if previous and previous != model and not cfg.get("overwrite", False):
        raise RetaError(f"paths.output_dir {out} already holds the teacher of model {previous} (teacher.json); pass "
                        f"overwrite=true to replace it with {model}'s, or choose another paths.output_dir")


def run(cfg: DictConfig) -> dict:
    """Train or load the teacher, write ``teacher.json`` into the output dir, return its meta."""
    preflight(cfg, planned_output_dir(cfg))
    set_threads(cfg.get("num_threads"))
    configure_data(cfg)
    _, meta = get_teacher(cfg)
    out = output_dir(cfg)
    atomic_write_json(out / "teacher.json", meta)
    print(f"teacher {meta['name']} on {meta['dataset']}: test acc {meta['test_acc']:.4f}  ({meta.get('source')})")
    return meta

"""Where a run computes: the one "is this a GPU run" rule shared by every stage and family."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

#: ``trainer.accelerator`` values that mean "a CUDA GPU when there is one"
GPU_ACCELERATORS = ("gpu", "cuda", "auto")


def gpu_run(trainer_cfg: Mapping[str, Any] | None) -> bool:
    """Whether the ``trainer`` config asks for a GPU (``gpu``, ``cuda`` or ``auto``) and CUDA is available."""
    return str((trainer_cfg or {}).get("accelerator", "cpu")) in GPU_ACCELERATORS and torch.cuda.is_available()


def run_device(trainer_cfg: Mapping[str, Any] | None) -> str:
    """``"cuda"`` for a GPU run (:func:`gpu_run`), else ``"cpu"``: where work outside a Trainer runs."""
    return "cuda" if gpu_run(trainer_cfg) else "cpu"

"""What every synthesis family shares at run time: the resume policy and the pixel resampler.

**Resume policy** (one for every family, docs/architecture.md "Contracts"): ``resume=true`` with a checkpoint at
``<run dir>/checkpoints/…/last.ckpt`` continues that run; ``resume=true`` *without* one logs a warning and starts
from scratch (so a job scheduler can always pass ``resume=true``, first start or requeue alike); without
``resume=true`` a stale checkpoint is removed before the run starts. A checkpoint written by another configuration
is refused by the distill stage's preflight and again by each family's fingerprint.

The distributed set-up (:class:`reta.synthesis.distributed.ShardInfo`) lives next to this module; the device rule is
:func:`reta.utils.device.gpu_run`, the config digest :func:`reta.utils.config.config_digest`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def resume_from(ckpt: Path, resume: bool) -> Path | None:
    """The checkpoint to load under the resume policy above (``None`` = start from scratch). Removes a stale
    checkpoint when not resuming, and warns when ``resume=true`` finds none."""
    ckpt = Path(ckpt)
    if resume and ckpt.is_file():
        return ckpt
    if resume:
        log.warning("resume=true but %s does not exist: starting from scratch", ckpt)
    ckpt.unlink(missing_ok=True)
    return None


def resample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to ``size``×``size`` (``align_corners=False``, no antialias); identity when sizes agree
    (docs/methods.md §3.3 "Resample")."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)

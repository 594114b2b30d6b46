"""What every synthesis family shares at run time: the resume policy, the synthesis clock and the pixel resampler.

**Resume policy** (one for every family, docs/architecture.md "Contracts"): ``resume=true`` with a checkpoint at
``<run dir>/checkpoints/…/last.ckpt`` continues that run; ``resume=true`` *without* one logs a warning and starts
from scratch (so a job scheduler can always pass ``resume=true``, first start or requeue alike); without
``resume=true`` a stale checkpoint is removed before the run starts. A checkpoint written by another configuration
is refused by the distill stage's preflight and again by each family's fingerprint.

**Synthesis clock** (:class:`SynthesisClock`): every resume checkpoint carries the synthesis seconds spent so far
(:meth:`SynthesisClock.stamp`, key ``synthesis_seconds``) and loading it adds them to the resumed run's clock
(:meth:`SynthesisClock.restore`), so a set's ``synthesis_seconds`` is the total over every interruption (the work
after the last checkpoint of a killed run is redone and counted once, when it is redone).

The distributed set-up (:class:`reta.synthesis.distributed.ShardInfo`) lives next to this module; the device rule is
:func:`reta.utils.device.gpu_run`, the config digest :func:`reta.utils.config.config_digest`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from reta.errors import CheckpointError

log = logging.getLogger(__name__)

#: method keys that change what a run logs, checkpoints or writes at the end, not its images: a resume may change them,
#: so they are left out of the distill stage's resume key and of every family's checkpoint fingerprint
OUTPUT_ONLY = ("log_every", "checkpoint_every", "clamp_output")


def optimisation_fields(method: dict) -> dict:
    """``method`` (a plain dict of the method's settings) without the :data:`OUTPUT_ONLY` keys."""
    return {k: v for k, v in method.items() if k not in OUTPUT_ONLY}


#: Key of the synthesis seconds spent so far in every resume checkpoint.
SECONDS_KEY = "synthesis_seconds"


class SynthesisClock:
    """Wall seconds of synthesis across resumes: the seconds recorded by the checkpoint the run resumed from plus this
    process's wall time since :meth:`start`, less what ``excluded()`` grew by meanwhile (teacher loading or squeezing,
    recorded as ``teacher_seconds``)."""

    def __init__(self, excluded: Callable[[], float] = lambda: 0.0) -> None:
        self.excluded = excluded
        self.start()

    def start(self) -> None:
        self.before, self._t0, self._x0 = 0.0, time.perf_counter(), self.excluded()

    def elapsed(self) -> float:
        return self.before + (time.perf_counter() - self._t0) - (self.excluded() - self._x0)

    def stamp(self, state: dict) -> dict:
        """``state`` with the seconds spent so far under :data:`SECONDS_KEY` (what a checkpoint writer saves)."""
        return {**state, SECONDS_KEY: self.elapsed()}

    def restore(self, state: dict, path: str | Path) -> None:
        """Count the seconds recorded in a checkpoint loaded from ``path`` as spent before this process; a checkpoint
        without them (written before checkpoints carried them) counts from the resume, with a warning."""
        if SECONDS_KEY not in state:
            log.warning("resume: %s records no synthesis seconds; synthesis_seconds counts from this resume", path)
            return
        seconds = state[SECONDS_KEY]
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
                or seconds < 0:
            raise CheckpointError(f"resume: {path} records synthesis_seconds={seconds!r}, not a finite number >= 0; "
                                  "use overwrite=true to start again")
        self.before = float(seconds)


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

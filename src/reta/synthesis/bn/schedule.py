"""Stage schedule of BN-matching synthesis: per-stage budgets and resolutions, and the global cosine LR.

Source: docs/methods.md §3.2-§3.3 [code: Jiacheng8/FADRM `recover/recover.py`]. One (IPC slot, class chunk) job runs
``K`` stages; stage ``i`` takes ``budgets[i]`` optimiser steps at resolution ``sizes[i]``. The learning rate
follows one cosine over the whole job, ``lr_t = ½ (1 + cos(π t / T)) · lr₀`` with ``t = 0 … T−1`` and
``T = Σ budgets`` (no warm-up, no restart at stage boundaries); the optimiser itself is re-created per stage.
SRe2L is the one-stage case.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from reta.errors import RetaError


@dataclass(frozen=True)
class StagePosition:
    """Where step ``t`` of a job falls: its stage, the step inside that stage, and what that implies."""

    stage: int
    step_in_stage: int
    size: int
    lr: float
    first_in_stage: bool
    last_in_stage: bool
    last_stage: bool


class StageSchedule:
    """``sizes[i]`` × ``budgets[i]`` stages with a cosine LR from ``lr`` over the sum of the budgets."""

    def __init__(self, sizes: Sequence[int], budgets: Sequence[int], lr: float) -> None:
        sizes, budgets = list(sizes), list(budgets)
        if not sizes or len(sizes) != len(budgets):
            raise RetaError(
                f"stages: sizes {sizes} and budgets {budgets} must be non-empty lists of the same length"
            )
        for name, values in (("sizes", sizes), ("budgets", budgets)):
            if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
                raise RetaError(f"stages: every entry of {name} must be a positive integer, got {values}")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise RetaError(f"stages: lr must be a positive number, got {lr!r}")
        self.sizes, self.budgets, self.lr0 = sizes, budgets, float(lr)
        self.starts = [sum(budgets[:i]) for i in range(len(budgets))]

    @property
    def num_stages(self) -> int:
        return len(self.sizes)

    @property
    def total(self) -> int:
        """Steps per job, ``T = Σ budgets``."""
        return sum(self.budgets)

    def lr_at(self, t: int) -> float:
        """Cosine LR of job step ``t`` (docs/methods.md §3.2)."""
        return 0.5 * (1.0 + math.cos(math.pi * t / self.total)) * self.lr0

    def stage_of(self, t: int) -> int:
        if not 0 <= t < self.total:
            raise IndexError(f"step {t} outside [0, {self.total})")
        stage = 0
        while stage + 1 < self.num_stages and t >= self.starts[stage + 1]:
            stage += 1
        return stage

    def position(self, t: int) -> StagePosition:
        """Stage, in-stage step, resolution and LR of job step ``t``."""
        stage = self.stage_of(t)
        k = t - self.starts[stage]
        return StagePosition(
            stage=stage,
            step_in_stage=k,
            size=self.sizes[stage],
            lr=self.lr_at(t),
            first_in_stage=k == 0,
            last_in_stage=k == self.budgets[stage] - 1,
            last_stage=stage == self.num_stages - 1,
        )

    def describe(self) -> dict:
        return {"sizes": self.sizes, "budgets": self.budgets, "lr": self.lr0}

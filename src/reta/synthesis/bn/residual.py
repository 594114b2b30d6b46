"""Residual connection between synthesis stages as a Lightning callback (FADRM; RETA's DRC swaps the anchors).

Source: docs/methods.md §3.3 [code: Jiacheng8/FADRM `recover/recover.py`]. At the end of every stage i but the last:

    x ← α · Resample(x, D_{i+1}) + (1 − α) · Resample(anchor, D_{i+1}),   α = 0.5,

bilinear, ``align_corners=False``, no antialias (skipped when sizes agree), in normalised space; no clamp after the
merge (a convex mix of in-range images stays in range). Which anchor is used is delegated to an
:class:`~reta.synthesis.bn.anchors.AnchorProvider` (``static`` = the image's fixed patch, FADRM; ``retrieval`` = DRC).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from reta.errors import RetaError
from reta.synthesis.bn.anchors import AnchorProvider, StageEnd, StaticPatchAnchors
from reta.synthesis.runtime import resample


def check_alpha(alpha: Any) -> float:
    if (
        isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha)
        or not 0.0 <= alpha <= 1.0
    ):
        raise RetaError(f"residual.alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def residual_merge(x: torch.Tensor, anchor: torch.Tensor, alpha: float, size: int) -> torch.Tensor:
    """``α · Resample(x, size) + (1 − α) · Resample(anchor, size)`` (α = 1: x resampled, unchanged otherwise)."""
    x = resample(x, size)
    if alpha == 1.0:
        return x
    return alpha * x + (1.0 - alpha) * resample(anchor.to(x), size)


class ResidualConnection(L.Callback):
    """Merges the working images with their anchors at every stage end but the last (``on_synthesis_stage_end``)."""

    def __init__(self, alpha: float = 0.5, provider: AnchorProvider | None = None) -> None:
        self.alpha = check_alpha(alpha)
        self.provider = provider if provider is not None else StaticPatchAnchors()
        self.merges = 0

    @property
    def state_key(self) -> str:
        return "ResidualConnection"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.provider.setup(pl_module)

    def on_synthesis_stage_end(self, trainer: L.Trainer, pl_module, event: StageEnd) -> None:
        if event.last_stage:
            return
        with torch.no_grad():
            anchors = self.provider.anchors(event)
            merged = residual_merge(event.images, anchors, self.alpha, event.next_size)
        pl_module.replace_images(merged)
        self.merges += 1

    def sharding_conflict(self, module) -> str | None:
        """The anchor provider's own conflict (:meth:`AnchorProvider.sharding_conflict`)."""
        return self.provider.sharding_conflict(module)

    def state_dict(self) -> dict[str, Any]:
        return {"merges": self.merges, "provider": self.provider.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.merges = int(state_dict.get("merges", 0))
        self.provider.load_state_dict(state_dict.get("provider", {}))

    def describe(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "anchors": self.provider.describe()}

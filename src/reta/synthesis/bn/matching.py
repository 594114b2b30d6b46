"""BN-statistics matching as composable pieces: forward hooks on a frozen teacher's BN layers and the loss terms.

Source: docs/methods.md §3.1 [code: Jiacheng8/FADRM `recover/utils_recover.py` ``BNFeatureHook``, `recover/recover.py`;
VILA-Lab/SRe2L `SRe2L/recover/`]. A hook on every BatchNorm layer (module order; layer 1 is the stem BN) reads the
BN **input** ``a ∈ R^{B×C×H×W}`` and computes per channel, over (B, H, W), the mean μ and the biased variance σ².
The matching loss of one teacher is

    Σ_l m_l · ( ‖μ_l − μ_l^run‖₂ + ‖σ²_l − σ²_l^run‖₂ ),   m_1 = first_multiplier (10), m_{l>1} = 1,

weighted by that teacher's ``r_bn`` (default 0.01) in the step loss. Statistics are computed in float32 even
under autocast [recon]. A teacher without BN layers contributes 0 (with one warning).

Hooks are **off by default** and record only inside ``with hooks.capture():`` — the synthesis module opens that
context around the active teacher's forward and nowhere else, so extra forwards (RETA's PTA/DRC features through
:func:`reta.models.features`, patch scoring) never overwrite the statistics of the step.

Loss terms are small callables ``term(step) -> Tensor`` with a ``name``; they return their *weighted*
contribution to the step loss (see :class:`reta.synthesis.bn.module.SynthesisStep`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class BNStatHook:
    """Forward hook on one BN layer; after a captured forward holds ``mean``, ``var`` and the matching ``term``."""

    def __init__(self, layer: _BatchNorm, multiplier: float) -> None:
        self.layer = layer
        self.multiplier = float(multiplier)
        self.enabled = False
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None
        self.term: torch.Tensor | None = None
        self._handle = layer.register_forward_hook(self._hook)

    def _hook(self, layer: _BatchNorm, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if not self.enabled:
            return
        a = inputs[0]
        with torch.autocast(device_type=a.device.type, enabled=False):
            a = a.float()
            dims = [0] + list(range(2, a.dim()))
            mean = a.mean(dim=dims)
            var = a.var(dim=dims, unbiased=False)
            self.mean, self.var = mean, var
            self.term = torch.linalg.vector_norm(layer.running_mean.float() - mean) + torch.linalg.vector_norm(
                layer.running_var.float() - var
            )

    def clear(self) -> None:
        self.mean = self.var = self.term = None

    def remove(self) -> None:
        self._handle.remove()


class BNHooks:
    """Hooks on every BN layer of ``model`` (module order), first one weighted ``first_multiplier``."""

    def __init__(self, model: nn.Module, first_multiplier: float = 10.0) -> None:
        layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
        self.hooks = [BNStatHook(m, first_multiplier if i == 0 else 1.0) for i, m in enumerate(layers)]
        self._warned = False

    def __len__(self) -> int:
        return len(self.hooks)

    @property
    def enabled(self) -> bool:
        return any(h.enabled for h in self.hooks)

    def _set(self, on: bool) -> None:
        for h in self.hooks:
            h.enabled = on

    @contextlib.contextmanager
    def capture(self) -> Iterator[BNHooks]:
        """Enable the hooks for the forward passes inside the block (fresh statistics), then disable them."""
        for h in self.hooks:
            h.clear()
        self._set(True)
        try:
            yield self
        finally:
            self._set(False)

    def stats(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(mean, var)`` per BN layer from the last captured forward."""
        return [(h.mean, h.var) for h in self.hooks]

    def matching_loss(self) -> torch.Tensor:
        """Σ_l m_l · (‖μ_l − μ_run‖ + ‖σ²_l − σ²_run‖) of the last captured forward (0 without BN layers)."""
        if not self.hooks:
            if not self._warned:
                warnings.warn("teacher has no BatchNorm layer: its BN-matching term is 0", stacklevel=2)
                self._warned = True
            return torch.zeros(())
        missing = [i for i, h in enumerate(self.hooks) if h.term is None]
        if missing:
            raise RuntimeError(f"BN hooks {missing} recorded nothing: run the teacher forward inside hooks.capture()")
        return sum(h.multiplier * h.term for h in self.hooks)  # type: ignore[return-value]

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks = []


@dataclass
class TeacherSlot:
    """One frozen teacher of the synthesis: its label, eval-mode network, BN hooks, BN weight and squeeze meta."""

    name: str
    model: nn.Module
    r_bn: float
    first_multiplier: float = 10.0
    meta: dict[str, Any] = field(default_factory=dict)
    hooks: BNHooks = field(init=False)

    def __post_init__(self) -> None:
        self.model.eval().requires_grad_(False)
        self.hooks = BNHooks(self.model, self.first_multiplier)


class CrossEntropyLoss:
    """``weight · CE(f(A(x)), y)``, batch mean, on the active teacher's logits (docs/methods.md §3.1)."""

    name = "ce"

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = float(weight)

    def __call__(self, step) -> torch.Tensor:
        return self.weight * F.cross_entropy(step.logits, step.targets)


class BNMatchingLoss:
    """``scale · r_bn(teacher) · Σ_l m_l (‖Δμ_l‖ + ‖Δσ²_l‖)`` of the active teacher's captured statistics."""

    name = "bn"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = float(scale)

    def __call__(self, step) -> torch.Tensor:
        t = step.teacher
        return (self.scale * t.r_bn) * t.hooks.matching_loss().to(step.logits.device)

"""CV-DD's prior-performance-weighted committee on the BN wing's multi-teacher rotation (a ``method.losses`` term).

Source: docs/methods.md §14 [code: Jiacheng8/CV-DD `recover/recover.py`, `recover/utils_recover.py`; arXiv
2501.07575 §3]. Each teacher ``i`` of the committee gets the weight

    w = softmax(a / τ),   a_i = the prior accuracy of teacher i in percent, τ = ``temperature`` (5 in CV-DD),

and contributes ``w_i (CE_i + r_bn,i · BN_i)`` — its own cross-entropy and BN-statistics matching
(:class:`~reta.synthesis.bn.matching.BNHooks`). CV-DD runs two voters on the same batch each step; reta uses the
BN family's rotation (teacher ``t mod M`` at step ``t``, FADRM+) and scales the active teacher's term by ``M·w_i``, so
one rotation sums to ``Σ_i w_i (CE_i + r_bn,i·BN_i)``.

Priors: ``priors`` (a list, one accuracy in percent per teacher, in ``method.teachers`` order) or ``teacher_acc``:
each teacher's recorded accuracy from its squeeze meta (``test_acc``) — the cheap option of docs/methods.md §14, a
deviation from CV-DD's priors (the student accuracy of each teacher's own distilled set).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from reta.errors import RetaError

log = logging.getLogger(__name__)


def prior_weights(accuracies: Sequence[float], temperature: float) -> torch.Tensor:
    """``softmax(a / τ)`` over the committee (float64)."""
    if float(temperature) <= 0:
        raise RetaError(f"committee temperature must be > 0, got {temperature}")
    a = torch.as_tensor([float(v) for v in accuracies], dtype=torch.float64)
    return torch.softmax(a / float(temperature), 0)


class CommitteeLoss:
    """``M · w_i · (ce_weight · CE_i + r_bn,i · BN_i)`` of the active teacher ``i`` (module docstring)."""

    name = "committee"

    def __init__(self, priors: str | Sequence[float] = "teacher_acc", temperature: float = 5.0,
                 ce_weight: float = 1.0) -> None:
        if isinstance(priors, str) and priors != "teacher_acc":
            raise ValueError(f"priors must be a list of accuracies (%) or 'teacher_acc', got {priors!r}")
        self.priors, self.temperature, self.ce_weight = priors, float(temperature), float(ce_weight)
        self.weights: torch.Tensor | None = None
        self.accuracies: list[float] = []

    def bind(self, module) -> None:
        teachers = module.teachers
        if isinstance(self.priors, str):
            missing = [t.name for t in teachers if t.meta.get("test_acc") is None]
            if missing:
                raise RetaError(f"committee priors=teacher_acc: no recorded accuracy for {missing}; give priors=[…]")
            self.accuracies = [100.0 * float(t.meta["test_acc"]) for t in teachers]
        else:
            self.accuracies = [float(v) for v in self.priors]
            if len(self.accuracies) != len(teachers):
                raise RetaError(f"committee: {len(self.accuracies)} priors for {len(teachers)} teachers "
                                f"({[t.name for t in teachers]})")
        self.weights = prior_weights(self.accuracies, self.temperature)
        log.info("committee weights %s from priors %s", [round(float(w), 4) for w in self.weights], self.accuracies)

    def describe(self) -> dict:
        return {"priors": self.accuracies, "temperature": self.temperature,
                "weights": [float(w) for w in self.weights] if self.weights is not None else None}

    def __call__(self, step) -> torch.Tensor:
        if self.weights is None:
            raise RuntimeError("CommitteeLoss used before bind(module)")
        t = step.teacher
        scale = len(self.weights) * float(self.weights[step.teacher_index])
        ce = F.cross_entropy(step.logits, step.targets)
        return scale * (self.ce_weight * ce + t.r_bn * t.hooks.matching_loss().to(step.logits.device))

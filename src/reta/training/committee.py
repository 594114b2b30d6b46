"""CV-DD's committee of teachers: prior-performance weights, and the committee labeller of batch-specific soft labels.

Sources: docs/methods.md §14 [code: Jiacheng8/CV-DD `recover/recover.py`, `recover/utils_recover.py`,
`relabel/relabel.py`; arXiv 2501.07575 §3]. Teacher ``i`` with prior accuracy ``a_i`` (percent) gets the weight

    w = softmax(a / τ)

over the teachers that vote together: τ = 5 for the synthesis loss (:mod:`reta.synthesis.bn.committee`), τ = 10 for
the soft labels (:class:`CommitteeLabeller`). Priors are a list (one accuracy per teacher, in committee order) or
``teacher_acc``: each teacher's recorded accuracy from its squeeze meta (``test_acc``) — a cheap stand-in for CV-DD's
priors (the student accuracy of each teacher's own distilled set), a deviation documented in docs/methods.md §14.

**Batch-specific soft labels (BSSL)** [code: CV-DD `relabel/relabel.py`]: the committee labels a batch with every
teacher in train mode, forwarding it in consecutive chunks of ``split`` images (8 of a batch of 16 in CV-DD) so each
chunk's BN layers normalise with that chunk's own statistics, and combines the logits as Σ_i w_i · logit_i.
Train-mode forwards update running statistics: the student labels with a private copy of the labeller
(:func:`reta.training.soft_labels.label_teacher`), so the cached teachers never change.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reta.errors import RetaError

PRIOR_SOURCES = ("teacher_acc",)


def prior_weights(accuracies: Sequence[float], temperature: float) -> torch.Tensor:
    """``softmax(a / τ)`` over the given accuracies (float64)."""
    if float(temperature) <= 0:
        raise RetaError(f"committee temperature must be > 0, got {temperature}")
    a = torch.as_tensor([float(v) for v in accuracies], dtype=torch.float64)
    return torch.softmax(a / float(temperature), 0)


def check_priors(priors, where: str) -> None:
    """``priors`` is ``teacher_acc`` or a non-empty list of numbers (no data needed)."""
    if isinstance(priors, str):
        if priors not in PRIOR_SOURCES:
            raise RetaError(f"{where}: priors must be a list of accuracies (%) or one of {', '.join(PRIOR_SOURCES)}, "
                            f"got {priors!r}")
        return
    if (not isinstance(priors, (list, tuple)) or not priors
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in priors)):
        raise RetaError(f"{where}: priors must be a list of accuracies (%) or teacher_acc, got {priors!r}")


def committee_accuracies(priors, names: Sequence[str], metas: Sequence[dict], where: str) -> list[float]:
    """The prior accuracy (percent) of every teacher: the given list, or each teacher's recorded ``test_acc``."""
    check_priors(priors, where)
    if isinstance(priors, str):
        missing = [n for n, m in zip(names, metas) if m.get("test_acc") is None]
        if missing:
            raise RetaError(f"{where}: priors=teacher_acc but no recorded accuracy for {missing}; give priors=[…]")
        return [100.0 * float(m["test_acc"]) for m in metas]
    if len(priors) != len(names):
        raise RetaError(f"{where}: {len(priors)} priors for {len(names)} teachers ({list(names)})")
    return [float(v) for v in priors]


class CommitteeLabeller(nn.Module):
    """Σ_i w_i · f_i(x), each teacher forwarded on consecutive chunks of ``split`` images (None: the whole batch).

    In eval mode this is the weighted committee of frozen teachers; in train mode (``protocol.teacher_mode=train``)
    every chunk is normalised with its own batch statistics — CV-DD's batch-specific soft labels."""

    def __init__(self, teachers: Sequence[nn.Module], weights: torch.Tensor, split: int | None = None,
                 names: Sequence[str] = (), accuracies: Sequence[float] = (), temperature: float | None = None) -> None:
        super().__init__()
        if len(teachers) != len(weights):
            raise RetaError(f"committee: {len(weights)} weights for {len(teachers)} teachers")
        if split is not None and (isinstance(split, bool) or int(split) < 1):
            raise RetaError(f"committee split must be a positive number of images or null, got {split!r}")
        self.teachers = nn.ModuleList(teachers)
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float64).clone())
        self.split = None if split is None else int(split)
        self.names, self.accuracies, self.temperature = list(names), [float(a) for a in accuracies], temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = x.split(self.split) if self.split is not None else (x,)
        out = []
        for chunk in chunks:
            logits = [t(chunk) for t in self.teachers]
            out.append(sum(w.to(z.dtype) * z for w, z in zip(self.weights, logits)))
        return torch.cat(out)

    def describe(self) -> dict:
        return {"teachers": self.names, "priors": self.accuracies, "temperature": self.temperature,
                "weights": [float(w) for w in self.weights], "split": self.split}


def committee_specs(cfg, spec) -> list[tuple[str, dict | None]]:
    """``(label, model config)`` of every teacher of ``protocol.committee`` — the same resolution as
    ``method.teachers`` (:func:`reta.training.teacher_cache.teacher_specs`); an unknown name lists the valid ones."""
    from reta.training.teacher_cache import teacher_specs

    return teacher_specs(cfg, spec.teachers, "protocol.committee.teachers")


def committee_teacher(cfg, spec, train, test) -> tuple[CommitteeLabeller, dict]:
    """The labelling committee of ``protocol.committee`` and its record. Each teacher comes from the teacher cache
    exactly as a ``method.teachers`` entry of a synthesis run does (:class:`reta.training.teacher_cache.TeacherLoader`
    on the whole training split: squeezed on first use, then reused), so BSSL labels with the teachers the committee
    synthesised with."""
    from reta.training.teacher_cache import TeacherLoader

    load = TeacherLoader(cfg, train, test)
    specs = committee_specs(cfg, spec)
    loaded = [load(model_cfg) for _, model_cfg in specs]
    names = [label for label, _ in specs]
    metas = [meta for _, meta in loaded]
    acc = committee_accuracies(spec.priors, names, metas, "protocol.committee")
    labeller = CommitteeLabeller([m for m, _ in loaded], prior_weights(acc, spec.temperature), spec.split, names, acc,
                                 float(spec.temperature))
    record = {"name": f"committee({','.join(names)})", "test_acc": None, "committee": labeller.describe(),
              "keys": [m.get("key") or m.get("checkpoint_sha256") or m.get("source") for m in metas]}
    return labeller, record

"""CV-DD's prior-performance-weighted committee vote in the BN wing (a ``method.losses`` term that also selects the
step's voters).

Source: docs/methods.md §14 [code: Jiacheng8/CV-DD `recover/recover.py` ``get_images`` and ``--model-setting``,
`recover/utils_recover.py`; arXiv 2501.07575 §3]. With ``voters: k`` (2 in CV-DD) the k teachers selected for the
step's IPC slot are forwarded on the *same* augmented batch, each with its own BN hooks, and the step loss is

    L = Σ_{i ∈ voters} w_i (ce_weight · CE_i + r_bn,i · BN_i),   w = softmax(a_voters / τ),  τ = ``temperature`` (5),

the softmax taken over the selected voters' prior accuracies only (:func:`~reta.training.committee.prior_weights`).

Which teachers vote (``selection``, one mode or ``{"<ipc>": mode, default: mode}`` by the run's IPC,
keys quoted as in ``method.per_ipc``):

* a list of k teacher labels — every slot: those teachers (CV-DD's hand-picked IPC 1 pairs, e.g. MobileNetV2 +
  DenseNet121 on CIFAR-10 and ImageNette, ShuffleNetV2 + MobileNetV2 on CIFAR-100);
* ``fixed_top`` — every slot: the k highest priors (CV-DD ``--model-setting 4``, its IPC 1 rule when no pair is
  hand-picked for the dataset);
* ``enumerate`` — slot s: the (s mod C)-th of the C unordered k-subsets of the committee in lexicographic order of
  ``method.teachers`` (``itertools.combinations``; CV-DD ``--model-setting 5``, IPC 10, lists the 10 pairs of its
  5 teachers in exactly this order);
* ``random`` — slot s: k distinct teachers drawn from a generator seeded by (seed, slot) (CV-DD
  ``--model-setting 3``, ``random.sample`` per IPC slot), so a rerun or a shard draws the same voters;
* ``rotate`` (k = 1 only) — the BN family's rotation (teacher t mod M at job step t, FADRM+); the active teacher's
  term is scaled by M·w_i with w over the whole committee, so one rotation sums to Σ_i w_i (CE_i + r_bn,i·BN_i).

The BN wing synthesises one job per (IPC slot, class chunk) — by default all classes of a slot in one batch, one image
per class, as CV-DD does (``get_images`` per ``ipc_id``, class chunks of ``--batch-size``) — so the voters are a
function of the slot and the same for every class chunk of it, as in CV-DD.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from reta.errors import RetaError
from reta.training.committee import check_priors, committee_accuracies, prior_weights
from reta.utils.config import plain

__all__ = ["CommitteeLoss", "prior_weights", "SELECTIONS"]

log = logging.getLogger(__name__)
SELECTIONS = ("rotate", "fixed_top", "enumerate", "random")


def selection_for(selection, ipc: int):
    """The mode (a name or a list of teacher labels) of ``selection`` at this IPC (a mode, or a map
    ``{<ipc>: mode, default: mode}``)."""
    if isinstance(selection, Mapping):
        mode = selection.get(str(ipc), selection.get("default"))
        if mode is None:
            raise RetaError(f"committee selection has no entry for ipc {ipc} and no default: {dict(selection)}")
        return mode
    return selection


def voter_schedule(mode, voters: int, accuracies: Sequence[float], ipc: int, seed: int,
                   labels: Sequence[str] = ()) -> list[tuple[int, ...]]:
    """The voters of every IPC slot (teacher indices, ascending) for the modes other than ``rotate``."""
    m = len(accuracies)
    if isinstance(mode, (list, tuple)):
        unknown = [v for v in mode if v not in labels]
        if unknown:
            raise RetaError(f"committee selection names {unknown}, not teachers of this run; valid: {list(labels)}")
        chosen = tuple(sorted({list(labels).index(v) for v in mode}))
        if len(chosen) != voters:
            raise RetaError(f"committee selection {list(mode)} names {len(chosen)} distinct teachers; voters={voters}")
        return [chosen] * ipc
    if mode == "fixed_top":
        top = sorted(range(m), key=lambda i: (-float(accuracies[i]), i))[:voters]
        return [tuple(sorted(top))] * ipc
    if mode == "enumerate":
        subsets = list(itertools.combinations(range(m), voters))
        return [subsets[s % len(subsets)] for s in range(ipc)]
    if mode == "random":
        out = []
        for s in range(ipc):
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + 7_777 + s)
            out.append(tuple(sorted(torch.randperm(m, generator=gen)[:voters].tolist())))
        return out
    raise RetaError(f"committee selection must be one of {', '.join(SELECTIONS)}, got {mode!r}")


class CommitteeLoss:
    """The committee vote of the step's voters (module docstring); ``select_voters`` picks them."""

    name = "committee"

    def __init__(self, *, voters: int, selection: str | list | Mapping, priors: str | Sequence[float] = "teacher_acc",
                 temperature: float = 5.0, ce_weight: float = 1.0) -> None:
        priors, selection = plain(priors), plain(selection)
        check_priors(priors, "method.losses committee")
        if isinstance(voters, bool) or not isinstance(voters, int) or voters < 1:
            raise ValueError(f"voters must be an integer >= 1, got {voters!r}")
        if isinstance(selection, Mapping):
            keys = [k for k in selection if not (isinstance(k, str) and (k.isdigit() or k == "default"))]
            if keys:  # string keys, as method.per_ipc: the command line can address them, and they sort in a digest
                raise ValueError(f"selection keys are IPCs written as strings (\"1\") or default, got {keys[0]!r}")
        modes = list(selection.values()) if isinstance(selection, Mapping) else [selection]
        bad = [v for v in modes if not isinstance(v, list) and v not in SELECTIONS]
        if bad:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)} or a list of teacher labels (or "
                             f"{{<ipc>: mode, default: mode}}), got {bad[0]!r}")
        if voters > 1 and "rotate" in modes:
            raise ValueError(f"selection 'rotate' runs one teacher per step; it needs voters: 1, got voters: {voters}")
        if float(temperature) <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.priors, self.temperature, self.ce_weight = priors, float(temperature), float(ce_weight)
        self.voters, self.selection = int(voters), selection
        self.weights: torch.Tensor | None = None  # over the whole committee (rotation)
        self.accuracies: list[float] = []
        self.mode: str | list = ""
        self.schedule: list[tuple[int, ...]] = []  # voters per IPC slot
        self.slot_weights: list[torch.Tensor] = []  # softmax over each slot's voters

    def bind(self, module) -> None:
        teachers = module.teachers
        self.accuracies = committee_accuracies(self.priors, [t.name for t in teachers], [t.meta for t in teachers],
                                               "method.losses committee")
        self.weights = prior_weights(self.accuracies, self.temperature)
        self.mode = selection_for(self.selection, int(module.ipc))
        if self.mode != "rotate":
            if self.voters > len(teachers):
                raise RetaError(f"committee: voters={self.voters} but only {len(teachers)} teachers "
                                f"({[t.name for t in teachers]})")
            self.schedule = voter_schedule(self.mode, self.voters, self.accuracies, int(module.ipc), int(module.seed),
                                           [t.name for t in teachers])
            self.slot_weights = [prior_weights([self.accuracies[i] for i in s], self.temperature)
                                 for s in self.schedule]
        log.info("committee (%s, %d voter(s)) weights %s from priors %s", self.mode, self.voters,
                 [round(float(w), 4) for w in self.weights], self.accuracies)

    def describe(self) -> dict:
        weights = [float(w) for w in self.weights] if self.weights is not None else None
        out = {"priors": self.accuracies, "temperature": self.temperature, "voters": self.voters,
               "selection": self.mode, "weights": weights}
        if self.schedule:
            out["slots"] = [list(s) for s in self.schedule]
            out["slot_weights"] = [[float(w) for w in ws] for ws in self.slot_weights]
        return out

    def select_voters(self, slot: int, step: int, num_teachers: int) -> tuple[int, ...]:
        """The teachers forwarded at job step ``step`` of IPC ``slot`` (indices into the module's teachers)."""
        if self.weights is None:
            raise RuntimeError("CommitteeLoss used before bind(module)")
        return (step % num_teachers,) if self.mode == "rotate" else self.schedule[slot]

    def __call__(self, step) -> torch.Tensor:
        if self.weights is None:
            raise RuntimeError("CommitteeLoss used before bind(module)")
        if self.mode == "rotate":
            scales = [len(self.weights) * float(self.weights[step.teacher_index])]
        else:
            chosen = self.schedule[step.slot]
            got = tuple(v.index for v in step.voters)
            if got != chosen:
                raise RuntimeError(f"committee: slot {step.slot} should vote with {chosen}, the step ran {got}")
            scales = [float(w) for w in self.slot_weights[step.slot]]
        total = 0.0
        for scale, v in zip(scales, step.voters):
            ce = F.cross_entropy(v.logits, step.targets)
            bn = v.teacher.hooks.matching_loss().to(v.logits.device)
            total = total + scale * (self.ce_weight * ce + v.teacher.r_bn * bn)
        return total

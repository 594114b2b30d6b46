"""What one BN-family synthesis step works on: the jobs (IPC slot × class chunk), the batch-shared augmentation,
the :class:`SynthesisStep` every loss term and callback sees, and the step stream the Lightning fit loop iterates.

Sources: docs/methods.md §3.4 (batch composition) and §3.5 (augmentation inside the step) [code: Jiacheng8/FADRM
`recover/recover.py`]. The module that runs the steps is :mod:`reta.synthesis.bn.module`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from reta.data.augment import random_resized_crop_flip
from reta.errors import RetaError
from reta.synthesis.bn.matching import TeacherSlot


@dataclass(frozen=True)
class Job:
    """One (IPC slot, class chunk) batch synthesised through the whole schedule."""

    index: int
    slot: int
    classes: tuple[int, ...]


def make_jobs(num_classes: int, ipc: int, classes_per_batch: int | None = None) -> list[Job]:
    """Slots outer, class chunks inner (docs/methods.md §3.4); the last chunk may be smaller."""
    per = num_classes if classes_per_batch is None else int(classes_per_batch)
    if per <= 0:
        raise RetaError(f"classes_per_batch must be positive (or null for all classes), got {classes_per_batch}")
    jobs: list[Job] = []
    for slot in range(ipc):
        for start in range(0, num_classes, per):
            jobs.append(Job(len(jobs), slot, tuple(range(start, min(start + per, num_classes)))))
    return jobs


@dataclass(frozen=True)
class AugmentSpec:
    """In-step augmentation (docs/methods.md §3.5): batch-shared RRC(scale) + flip, then roll jitter in [0, J]."""

    rrc: bool = True
    rrc_scale: tuple[float, float] = (0.08, 1.0)
    flip: bool = True
    jitter: int = 4


def synthesis_augment(x: torch.Tensor, size: int, spec: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    """One crop box, one flip and one roll for the whole batch, drawn from ``gen``; differentiable in ``x``."""
    if spec.rrc:
        x = random_resized_crop_flip(x, size, tuple(spec.rrc_scale), gen, flip=spec.flip, shared=True)
    elif spec.flip and bool(torch.rand(1, generator=gen) < 0.5):
        x = x.flip(3)
    if spec.jitter > 0:
        o1, o2 = torch.randint(0, spec.jitter + 1, (2,), generator=gen).tolist()
        x = torch.roll(x, shifts=(o1, o2), dims=(2, 3))
    return x


@dataclass(frozen=True)
class Voter:
    """One teacher forwarded in a step: its index in the module's teachers, the slot, and its logits of the step's
    augmented batch (its BN hooks hold the statistics of that forward)."""

    index: int
    teacher: TeacherSlot
    logits: torch.Tensor


@dataclass
class SynthesisStep:
    """Everything a loss term or an ``on_synthesis_step`` callback sees of one optimiser step.

    ``voters`` lists every teacher forwarded on the step's augmented batch (one for the rotation, two for CV-DD's
    committee, :mod:`reta.synthesis.bn.committee`); ``teacher``, ``teacher_index`` and ``logits`` are the first
    voter's, which is what the single-teacher terms (CE, BN matching, EDC's) use."""

    global_step: int
    job: int
    slot: int
    step: int
    stage: int
    resolution: int
    lr: float
    images: torch.Tensor
    augmented: torch.Tensor
    classes: torch.Tensor
    teacher: TeacherSlot
    teacher_index: int
    logits: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    voters: list[Voter] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.voters:
            self.voters = [Voter(self.teacher_index, self.teacher, self.logits)]

    @property
    def targets(self) -> torch.Tensor:
        return self.classes

    def add_loss(self, name: str, value: torch.Tensor, weight: float = 1.0) -> None:
        """Add ``weight · value`` to the step loss under ``name`` (names are unique per step)."""
        if name in self.losses:
            raise ValueError(f"loss term {name!r} added twice in one step")
        self.losses[name] = value if weight == 1.0 else weight * value

    def total(self) -> torch.Tensor:
        return sum(self.losses.values())  # type: ignore[return-value]

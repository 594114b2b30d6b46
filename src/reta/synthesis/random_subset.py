"""The ``random`` method: IPC real training images per class, uniformly at random, seeded (docs/methods.md §5.3)."""

from __future__ import annotations

from reta.data.registry import sample_per_class
from reta.synthesis.registry import DistillContext, SynthesisResult


def synthesize(cfg, ctx: DistillContext) -> SynthesisResult:
    idx = sample_per_class(ctx.train.targets, int(cfg.dataset.num_classes), int(cfg.ipc), int(cfg.seed))
    return SynthesisResult(ctx.train.gather(idx), ctx.train.targets[idx].clone(), {"train_indices": idx.tolist()})

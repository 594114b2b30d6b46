"""The method plug-in: ``method.synthesize`` is a Hydra ``_target_`` naming a synthesis function.

A synthesis function has the signature ``fn(cfg, ctx: DistillContext) -> SynthesisResult``; a method config names it
with ``synthesize: {_target_: reta.synthesis.bn.family.synthesize, _partial_: true}`` and :func:`synthesis_function`
instantiates it (so ``reta-distill`` imports only the family it runs). A function that can be sharded over ranks
carries ``shardable = True`` (see docs/architecture.md, "Add a method").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reta.synthesis.runtime import SynthesisClock
from reta.utils.plugins import plugin_function


@dataclass
class DistillContext:
    """What every synthesis function gets besides ``cfg``: the data splits, the output/checkpoint dirs and a
    teacher loader (``load_teacher(model_cfg) -> (module, meta)``, cached squeeze). Pretrained networks fetched
    another way (the IID pool) are fetched inside ``with ctx.teacher_timing():`` so their loading or squeezing is
    recorded as ``teacher_seconds``, not as synthesis time. ``clock`` times the synthesis across resumes: resume
    checkpoints carry its seconds (:class:`reta.synthesis.runtime.SynthesisClock`). ``save_snapshot`` writes a budget
    snapshot (:mod:`reta.synthesis.snapshots`)."""

    train: Any
    test: Any
    out_dir: Path
    ckpt_dir: Path
    load_teacher: Callable[[Any], tuple[torch.nn.Module, dict]]
    shard: Any = None  # reta.synthesis.distributed.ShardInfo of a sharded run (None = one process)
    teacher_timing: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    clock: SynthesisClock = field(default_factory=SynthesisClock)
    #: ``save_snapshot(result, iteration) -> path``: writes the set so far as a complete distilled set
    #: (:mod:`reta.synthesis.snapshots`); given by the distill stage
    save_snapshot: Callable[[Any, int], Path] | None = None


@dataclass
class SynthesisResult:
    """Pixel-space images ``[N, C, H, W]`` in [0, 1] ordered by class, hard labels, and meta to record."""

    images: torch.Tensor
    labels: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    soft_labels: torch.Tensor | None = None


def synthesis_function(method_cfg) -> Callable:
    """``method.synthesize`` (``{_target_: dotted.path, _partial_: true}``) → the synthesis function; a missing or
    unloadable target → one-line :class:`RetaError`."""
    return plugin_function(method_cfg.get("synthesize") if method_cfg is not None else None, "method.synthesize",
                           "fn(cfg, ctx) -> SynthesisResult (e.g. reta.synthesis.bn.family.synthesize)")


def is_shardable(fn: Callable) -> bool:
    return bool(getattr(getattr(fn, "func", fn), "shardable", False))

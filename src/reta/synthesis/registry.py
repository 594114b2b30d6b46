"""Method registry: ``method.kind`` → a synthesis function.

A synthesis function has the signature ``fn(cfg, ctx: DistillContext) -> SynthesisResult`` and is registered with
``@register_kind("name")`` in the module that implements it; :data:`KIND_MODULES` lists the modules imported
lazily so ``reta-distill`` only pays for what it runs.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reta.errors import RetaError

#: kind → module that registers it (imported on first use).
KIND_MODULES: dict[str, str] = {
    "random": "reta.synthesis.random_subset",
    "distribution": "reta.synthesis.dm.family",
    "bn_matching": "reta.synthesis.bn.family",
    "frozen": "reta.synthesis.frozen.family",
}

_KINDS: dict[str, Callable] = {}


@dataclass
class DistillContext:
    """What every synthesis function gets besides ``cfg``: the data splits, the output/checkpoint dirs and a
    teacher loader (``load_teacher(model_cfg) -> (module, meta)``, cached squeeze). Pretrained networks fetched
    another way (the IID pool) are fetched inside ``with ctx.teacher_timing():`` so their loading or squeezing is
    recorded as ``teacher_seconds``, not as synthesis time."""

    train: Any
    test: Any
    out_dir: Path
    ckpt_dir: Path
    load_teacher: Callable[[Any], tuple[torch.nn.Module, dict]]
    shard: Any = None  # reta.synthesis.bn.sharding.ShardInfo of a sharded run (None = one process)
    teacher_timing: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


@dataclass
class SynthesisResult:
    """Pixel-space images ``[N, C, H, W]`` in [0, 1] ordered by class, hard labels, and meta to record."""

    images: torch.Tensor
    labels: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    soft_labels: torch.Tensor | None = None


def register_kind(name: str) -> Callable[[Callable], Callable]:
    def deco(fn: Callable) -> Callable:
        _KINDS[name] = fn
        return fn

    return deco


def get_kind(name: str) -> Callable:
    if name not in KIND_MODULES:
        raise RetaError(f"unknown method kind {name!r}; valid: {', '.join(sorted(KIND_MODULES))}")
    importlib.import_module(KIND_MODULES[name])
    return _KINDS[name]

"""A fixed per-class held-out split of the training data, for choosing settings without looking at the test set.

``holdout_per_class = N > 0`` carves N images per class out of the training split with a generator seeded by
:data:`HOLDOUT_SEED` (independent of the run's seed, so every run, seed and stage sees the same held-out set).
:func:`split_holdout` returns ``(rest, held_out)`` as index views of the loaded split:

* the distill stage synthesises from ``rest`` only (patch pools, DRC/PTA pools, random subsets, DM batches);
* the evaluate stage draws its random subset from ``rest`` and measures every student on ``held_out`` instead of
  the test split.

The teachers are the exception: they are trained (and cached) on the whole training split, as in every other run,
so one cached teacher serves both protocols; the held-out images never reach a synthetic set or a student's
training data. This is the usual validation split carved from train for model selection. Own code because the
split must stay a zero-copy view of reta's in-memory :class:`~reta.data.base.ImageDataset` (``gather`` by index).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from reta.data.base import ImageDataset
from reta.data.registry import class_index
from reta.errors import RetaError

#: fixed seed of the held-out draw (never the run's seed: the split must not change between runs).
HOLDOUT_SEED = 20_251_201


class SubsetImageDataset(ImageDataset):
    """The images ``indices`` of ``base`` (a view: pixels stay in ``base``); ``indices`` are base positions."""

    def __init__(self, base: ImageDataset, indices: torch.Tensor, tag: str) -> None:
        self.base = base
        self.indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        self.targets = base.targets[self.indices].clone()
        self.num_classes = base.num_classes
        self.class_names = list(base.class_names)
        self.tag = tag  # part of cache keys of anything built from this view (e.g. patch pools)

    def load(self, index: int) -> torch.Tensor:
        return self.base.load(int(self.indices[int(index)]))

    def gather(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        return self.base.gather(self.indices[idx])


def check_holdout(value, name: str = "holdout_per_class") -> int:
    """``value`` as a non-negative int, or :class:`RetaError` (one line)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RetaError(f"{name} must be a non-negative integer (0 = no held-out split), got {value!r}")
    return int(value)


def holdout_indices(targets: torch.Tensor, num_classes: int, per_class: int) -> torch.Tensor:
    """Sorted indices of the held-out images: ``per_class`` per class, drawn with :data:`HOLDOUT_SEED`."""
    groups = class_index(targets, num_classes)
    smallest = min(len(g) for g in groups)
    if per_class >= smallest:
        raise RetaError(f"holdout_per_class={per_class} leaves nothing to train on (the smallest class has "
                        f"{smallest} images)")
    g = torch.Generator().manual_seed(HOLDOUT_SEED)
    picks = [grp[torch.randperm(len(grp), generator=g)[:per_class]] for grp in groups]
    return torch.cat(picks).sort().values


def split_holdout(train: ImageDataset, per_class: int) -> tuple[ImageDataset, ImageDataset | None]:
    """``(rest, held_out)``; with ``per_class == 0`` the split is ``(train, None)`` (no copy, no view)."""
    per_class = check_holdout(per_class)
    if per_class == 0:
        return train, None
    held = holdout_indices(train.targets, train.num_classes, per_class)
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[held] = False
    rest = keep.nonzero().squeeze(1)
    tag = f"holdout{per_class}"
    return SubsetImageDataset(train, rest, f"{tag}-rest"), SubsetImageDataset(train, held, f"{tag}-held")

"""The fixed per-class held-out split of train (reta.data.holdout): disjoint, balanced, seed-independent views."""

from __future__ import annotations

import pytest
import torch

from reta.data.base import TensorImageDataset
from reta.data.holdout import SubsetImageDataset, check_holdout, holdout_indices, split_holdout
from reta.data.registry import sample_per_class
from reta.errors import RetaError


def _train(per_class: int = 20, classes: int = 3) -> TensorImageDataset:
    n = per_class * classes
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    targets = torch.arange(n) % classes  # interleaved classes
    return TensorImageDataset(images, targets, [str(c) for c in range(classes)])


def test_split_is_disjoint_balanced_and_covers_train():
    train = _train()
    rest, held = split_holdout(train, 5)
    assert isinstance(held, SubsetImageDataset) and isinstance(rest, SubsetImageDataset)
    a, b = set(rest.indices.tolist()), set(held.indices.tolist())
    assert not a & b and a | b == set(range(len(train)))
    assert torch.bincount(held.targets, minlength=3).tolist() == [5, 5, 5]
    assert torch.bincount(rest.targets, minlength=3).tolist() == [15, 15, 15]
    assert rest.tag != held.tag and "holdout5" in rest.tag


def test_split_is_fixed_and_views_return_the_base_pixels():
    train = _train()
    assert torch.equal(holdout_indices(train.targets, 3, 5), holdout_indices(train.targets, 3, 5))
    torch.manual_seed(123)  # the global RNG does not move it
    rest, held = split_holdout(train, 5)
    assert torch.equal(held.indices, holdout_indices(train.targets, 3, 5))
    assert torch.equal(held.gather([0, 2]), train.gather(held.indices[[0, 2]]))
    assert torch.equal(rest.load(3), train.load(int(rest.indices[3])))
    assert rest[4][1] == int(train.targets[rest.indices[4]])
    # a random subset drawn from the rest never contains a held-out image
    idx = sample_per_class(rest.targets, 3, 15, seed=0)
    assert not set(rest.indices[idx].tolist()) & set(held.indices.tolist())


def test_zero_is_no_split_and_bad_values_fail_with_one_line():
    train = _train()
    rest, held = split_holdout(train, 0)
    assert rest is train and held is None
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(RetaError, match="holdout_per_class must be a non-negative integer"):
            check_holdout(bad)
    with pytest.raises(RetaError, match="leaves nothing to train on"):
        split_holdout(train, 20)

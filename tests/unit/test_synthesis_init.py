"""Real-patch initialisation (docs/methods.md §3.6): teacher-scored crops ranked by CE, bands, cache; noise init."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import reta.synthesis.bn.init as init_mod
from reta.data.augment import normalize
from reta.data.base import TensorImageDataset
from reta.models import build_model
from reta.synthesis.bn.init import NoiseInit, PatchBank, PatchInit, build_patch_pool, cached_patch_pool

MEAN, STD = [0.3], [0.3]


def dataset() -> TensorImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 16, 16), generator=g, dtype=torch.uint8)
    return TensorImageDataset(images, torch.arange(24) % 3, ["a", "b", "c"])


def teacher():
    torch.manual_seed(0)
    return build_model({"name": "convnet_tiny", "kwargs": {}}, 3, 1, 16).eval()


def test_pool_ranks_each_class_by_teacher_ce_of_its_best_crop():
    ds, t = dataset(), teacher()
    pool = build_patch_pool(ds, t, MEAN, STD, num_classes=3, size=16, mipc=5, num_crop=3, seed=0)
    assert len(pool) == 3 and all(pool.class_size(c) == 5 for c in range(3))
    for c in range(3):
        assert (ds.targets[pool.source[c]] == c).all()
        assert torch.equal(pool.scores[c], pool.scores[c].sort().values)  # easy → hard
        crops = pool.render(ds, c)
        assert crops.shape == (5, 1, 16, 16) and float(crops.min()) >= 0 and float(crops.max()) <= 1
        with torch.no_grad():
            ce = F.cross_entropy(t(normalize(crops, MEAN, STD)), torch.full((5,), c), reduction="none")
        torch.testing.assert_close(ce, pool.scores[c], rtol=1e-4, atol=1e-5)
    whole = build_patch_pool(ds, t, MEAN, STD, 3, 16, mipc=5, num_crop=1, seed=0, crop_scale=(1.0, 1.0))
    assert torch.equal(whole.render(ds, 0, [0])[0], ds.gather(whole.source[0][:1])[0])  # (1, 1): whole images


def test_pool_is_cached_and_bank_serves_the_band(tmp_path, monkeypatch):
    ds, t = dataset(), teacher()
    kw = dict(dataset=ds, teacher=t, mean=MEAN, std=STD, num_classes=3, size=16, mipc=6, num_crop=2, seed=1)
    first = cached_patch_pool(tmp_path, "toy", "tid", **kw)
    monkeypatch.setattr(init_mod, "build_patch_pool", lambda **_: pytest.fail("cache miss"))
    again = cached_patch_pool(tmp_path, "toy", "tid", **kw)
    assert all(torch.equal(a, b) for a, b in zip(first.boxes, again.boxes))
    bank = PatchBank(again, ds, ipc=2, band="medium")
    assert bank.ranks == [[2, 3]] * 3
    torch.testing.assert_close(
        bank.get([1, 2], 1), torch.stack([again.render(ds, 1, [3])[0], again.render(ds, 2, [3])[0]])
    )
    x = PatchInit(bank)([0, 1, 2], 0, 8, 1, MEAN, STD, torch.Generator())
    assert x.shape == (3, 1, 8, 8)  # normalised, resampled to the first stage's resolution
    noise = NoiseInit()([0, 1], 0, 16, 1, MEAN, STD, torch.Generator().manual_seed(0))
    assert noise.shape == (2, 1, 16, 16) and abs(float(noise.std()) - 1) < 0.2

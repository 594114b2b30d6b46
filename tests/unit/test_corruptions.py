"""The 15 ImageNet-C corruptions (reta.data.corruptions) and their cached test copies (reta.evaluation.robustness):
deterministic under a seed, a change that grows with severity, checked cache entries, and a student whose accuracy
falls with severity."""

from __future__ import annotations

import kornia
import pytest
import torch
import yaml
from torch import nn

from reta.data.base import TensorImageDataset
from reta.data.corruptions import CORRUPTIONS, corrupt
from reta.errors import RetaError
from reta.evaluation.robustness import CorruptedTests, corrupted_images, summarize_robustness

from helpers import CONF_DIR

CIFAR_C = yaml.safe_load(open(f"{CONF_DIR}/robustness/cifar_c.yaml"))
IMAGENET_C = {**CIFAR_C["constants"], **yaml.safe_load(open(f"{CONF_DIR}/robustness/imagenet_c.yaml"))["constants"]}
#: corruptions whose published constants do not order the pixel change by severity: glass blur (σ and sweeps trade
#: off), elastic (the affine pre-warp shrinks as the elastic field grows), frost (the image weight falls as the
#: texture's rises)
NOT_MONOTONE = {"glass_blur", "elastic_transform", "frost"}
#: corruptions that draw no random numbers
SEED_FREE = {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression"}


def smooth_images(n=12, channels=1, size=28, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = kornia.filters.gaussian_blur2d(torch.rand(n, channels, size, size, generator=g), (9, 9), (2.0, 2.0))
    lo, hi = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
    return ((x - lo) / (hi - lo) * 200 + 20).round().to(torch.uint8)


def test_all_fifteen_imagenet_c_corruptions_exist():
    assert list(CORRUPTIONS) == CIFAR_C["corruptions"] and len(CORRUPTIONS) == 15
    assert set(CIFAR_C["constants"]) == set(CORRUPTIONS) == set(IMAGENET_C)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_is_deterministic_under_its_seed_and_grows_with_severity(name):
    x = smooth_images()
    c = CIFAR_C["constants"]
    change = []
    for sev in range(1, 6):
        y = corrupt(x, name, sev, c, seed=3)
        assert y.dtype == torch.uint8 and y.shape == x.shape
        assert torch.equal(y, corrupt(x, name, sev, c, seed=3))
        change.append((y.float() - x.float()).abs().mean().item())
    other = corrupt(x, name, 5, c, seed=4)
    assert torch.equal(other, corrupt(x, name, 5, c, seed=3)) == (name in SEED_FREE)
    assert all(d > 0 for d in change), change
    if name not in NOT_MONOTONE:  # motion blur's severities 3 and 4 share σ (2) and differ in a radius beyond 3σ
        assert all(b > 0.95 * a for a, b in zip(change, change[1:])) and change[-1] > 1.5 * change[0], change
    rgb = corrupt(smooth_images(4, channels=3, size=32), name, 3, c, seed=0)  # colour images go through too
    assert rgb.shape == (4, 3, 32, 32)


def test_bad_names_and_severities_are_refused_with_the_valid_ones():
    with pytest.raises(RetaError, match="valid: gaussian_noise, shot_noise"):
        corrupt(smooth_images(2), "rain", 1, CIFAR_C["constants"], 0)
    with pytest.raises(RetaError, match="severities must be in 1..5"):
        corrupt(smooth_images(2), "fog", 6, CIFAR_C["constants"], 0)


def test_the_cache_is_written_once_and_checked_on_read(tmp_path):
    x = smooth_images(6)
    a = corrupted_images(x, "toy", "gaussian_noise", 2, 0, CIFAR_C["constants"], tmp_path)
    (path,) = (tmp_path / "corruptions" / "toy").iterdir()
    mtime = path.stat().st_mtime_ns
    assert torch.equal(a, corrupted_images(x, "toy", "gaussian_noise", 2, 0, CIFAR_C["constants"], tmp_path))
    assert path.stat().st_mtime_ns == mtime
    corrupted_images(x, "toy", "gaussian_noise", 2, 1, CIFAR_C["constants"], tmp_path)  # another seed, another entry
    assert len(list((tmp_path / "corruptions" / "toy").iterdir())) == 2
    entry = torch.load(path, weights_only=True)
    entry["images"][0, 0, 0, 0] ^= 1
    torch.save(entry, path)
    with pytest.raises(RetaError, match="does not match its key or checksum"):
        corrupted_images(x, "toy", "gaussian_noise", 2, 0, CIFAR_C["constants"], tmp_path)


def _bands(n_per_class, classes=7, size=28, seed=0):
    """Class c: a faint horizontal band (+0.12) at its own rows over a grey, mildly noisy background."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    x = 0.3 + torch.rand(len(labels), 1, size, size, generator=g) * 0.1
    for i, c in enumerate(labels.tolist()):
        x[i, :, c * size // classes:(c + 1) * size // classes] += 0.12
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels


def test_a_clean_students_accuracy_falls_with_severity_on_a_toy_set(tmp_path):
    torch.manual_seed(0)
    train_x, train_y = _bands(30)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 7))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model((train_x.float() / 255 - 0.5) / 0.5), train_y).backward()
        opt.step()
    test = TensorImageDataset(*_bands(50, seed=1), class_names=list("abcdefg"))
    names = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "motion_blur"]
    spec = {"seed": 0, "severities": [1, 2, 3, 4, 5], "corruptions": names, "constants": IMAGENET_C,
            "batch_size": 100}
    tests = CorruptedTests(spec, test, {"name": "toy", "mean": [0.5], "std": [0.5]}, tmp_path)
    run = tests.score(model)
    clean = (model((test.images.float() / 255 - 0.5) / 0.5).argmax(1) == test.targets).float().mean().item()
    assert clean == 1.0
    per_severity = [sum(run["robustness"][n][i] for n in names) / len(names) for i in range(5)]
    assert all(b <= a for a, b in zip(per_severity, per_severity[1:])) and per_severity[-1] < per_severity[0]
    summary = summarize_robustness([run, run], spec["severities"])
    assert tests.summarize([run, run]) == summary
    assert summary["mca"] == pytest.approx(sum(per_severity) / 5) and summary["mca_std"] == 0.0
    assert summary["per_corruption"]["motion_blur"]["acc_mean"] == run["robustness"]["motion_blur"]

"""Each synthesis family optimises: its loss goes down over a few steps on the tiny IDX fixture (BN matching from
noise (CE off: the one-epoch teacher is near chance), DM from noise, SFM on a random frozen backbone without
augmentation). Compared as the mean of the first steps against the mean of the
last ones, so one noisy step (DM draws a fresh embedder every iteration) cannot decide it."""

from __future__ import annotations

import pytest

from reta import distill
from reta.data.distilled import load_distilled
from reta.synthesis.bn.module import SynthesisModule

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides, with_out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loss")
    root = write_idx_dataset(tmp / "fmnist", n_train=60, n_test=20, classes=10, gz=False)
    return tmp, tiny_overrides(tmp, root)


def _drop(losses: list[float], k: int) -> tuple[float, float]:
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def test_bn_matching_loss_goes_down(tiny, monkeypatch):
    tmp, ov = tiny
    seen: list[float] = []
    real_log = SynthesisModule.log

    def record(self, name, value, *args, **kwargs):
        if name == "loss":
            seen.append(float(value))
        return real_log(self, name, value, *args, **kwargs)

    monkeypatch.setattr(SynthesisModule, "log", record)
    distill.run(compose_cfg("distill", [*with_out(ov, tmp / "bn"), "method=sre2l", "ipc=1",
                                        "method.stages.budgets=[24]", "method.log_every=1",
                                        "method.ce_weight=0", "method.lr=0.1"]))
    assert len(seen) == 24
    first, last = _drop(seen, 4)
    assert last < 0.8 * first, f"BN-matching loss {first:.4g} → {last:.4g}"


def test_distribution_matching_loss_goes_down(tiny):
    tmp, ov = tiny
    res = distill.run(compose_cfg("distill", [*with_out(ov, tmp / "dm"), "method=dm", "ipc=1", "method.init=noise",
                                              "method.iterations=20", "method.batch_real=4", "method.log_every=1",
                                              "method.embedder.kwargs.depth=2", "method.embedder.kwargs.width=8"]))
    losses = [r["match"] for r in load_distilled(res["distilled"]).meta["loss_history"]]
    assert len(losses) == 20
    first, last = _drop(losses, 5)
    assert last < 0.8 * first, f"DM loss {first:.4g} → {last:.4g}"


def test_frozen_backbone_loss_goes_down(tiny):
    tmp, ov = tiny
    no_aug = ["method.aug.noise_p=0", "method.aug.rrc_scale_min=1.0", "method.aug.flip=false"]  # one objective
    res = distill.run(compose_cfg("distill", [
        *with_out(ov, tmp / "sfm"), "method=sfm", "ipc=1", "method.iterations=30", "method.extent_every=5",
        "method.lr=2e-2", "method.log_every=1", *no_aug, "backbone=random", "backbone.model.kwargs.depth=2",
        "backbone.model.kwargs.width=8"]))
    losses = [r["loss"] for r in load_distilled(res["distilled"]).meta["loss_history"]]
    assert len(losses) == 30
    first, last = _drop(losses, 4)
    assert last < 0.8 * first, f"SFM loss {first:.4g} → {last:.4g}"

"""CV-DD (``method=cvdd``): prior-performance weights of the committee, and reta-distill end to end."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reta import distill
from reta.cli import distill as cli_distill
from reta.data.distilled import load_distilled
from reta.errors import RetaError
from reta.synthesis.bn.committee import CommitteeLoss, prior_weights
from reta.synthesis.bn.matching import TeacherSlot
from reta.synthesis.bn.step import SynthesisStep

from fixtures import write_idx_dataset
from helpers import cli, compose_cfg, tiny_overrides


def test_weights_are_the_softmax_of_the_accuracies_over_the_temperature():
    acc = [63.0, 65.3, 68.5, 67.6, 67.4]  # CV-DD's CIFAR-10 priors
    w = prior_weights(acc, 5.0)
    e = [math.exp(a / 5.0) for a in acc]
    assert w.tolist() == pytest.approx([v / sum(e) for v in e], rel=1e-12)
    pair = prior_weights([63.0, 68.5], 5.0)  # ResNet18 + ShuffleNetV2: ≈ (0.25, 0.75)
    assert pair.tolist() == pytest.approx([0.2497, 0.7503], abs=1e-4)
    with pytest.raises(RetaError):
        prior_weights(acc, 0.0)


def test_rotation_scales_the_active_teachers_ce_and_bn_by_m_times_its_weight():
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.LazyLinear(3)) for _ in range(2)]
    x = torch.randn(3, 1, 5, 5)
    for n in nets:
        n(x)
    slots = [TeacherSlot(f"t{i}", n, r_bn=0.01, meta={"test_acc": a}) for i, (n, a) in enumerate(zip(nets, [0.6, 0.7]))]
    term = CommitteeLoss(priors="teacher_acc", temperature=5.0, voters=1, selection="rotate")

    class Module:
        teachers, ipc, seed = slots, 1, 0

    term.bind(Module())
    assert term.weights.tolist() == pytest.approx(prior_weights([60.0, 70.0], 5.0).tolist())
    y = torch.tensor([0, 1, 2])
    with slots[1].hooks.capture():
        logits = slots[1].model(x)
    got = term(SynthesisStep(0, 0, 0, 1, 0, 5, 0.1, x, x, y, slots[1], 1, logits))
    want = 2 * float(term.weights[1]) * (nn.functional.cross_entropy(logits, y) + 0.01 * slots[1].hooks.matching_loss())
    torch.testing.assert_close(got, want)
    with pytest.raises(RetaError, match="3 priors for 2 teachers"):
        CommitteeLoss(priors=[1.0, 2.0, 3.0], voters=1, selection="rotate").bind(Module())


@pytest.fixture()
def tiny(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    return tmp_path, tiny_overrides(tmp_path, root)


def test_reta_distill_cvdd_records_the_committee_weights(tiny):
    tmp_path, ov = tiny
    teachers = "method.teachers=[convnet_tiny,{name:convnet,kwargs:{depth:1,width:4,norm:batch},label:c1}]"
    r = distill.run(compose_cfg("distill", [*ov, "method=cvdd", "ipc=1", "method.stages.budgets=[4]", teachers,
                                            "method.init.mipc=4", "method.init.num_crop=2",
                                            "method.losses.0.priors=[50.0,60.0]"]))
    ds = load_distilled(r["distilled"])
    committee = ds.meta["synthesis"]["loss_terms"]["committee"]
    assert committee["priors"] == [50.0, 60.0]
    assert committee["weights"] == pytest.approx(prior_weights([50.0, 60.0], 5.0).tolist())
    # IPC 1: both teachers vote in every step (the two highest priors), weighted over the pair
    assert committee["voters"] == 2 and committee["selection"] == "fixed_top" and committee["slots"] == [[0, 1]]
    assert committee["slot_weights"][0] == pytest.approx(prior_weights([50.0, 60.0], 5.0).tolist())
    assert ds.meta["synthesis"]["round_robin"] == ["convnet_tiny", "c1"] and ds.images.shape == (10, 1, 28, 28)


@pytest.mark.parametrize("bad, says", [
    ("method.losses.0.selection=best", "selection must be one of"),
    ("method.losses.0.voters=0", "voters must be an integer >= 1"),
    ("method.losses.0.selection=rotate", "needs voters: 1"),
])
def test_bad_committee_values_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, bad, says):
    out = tmp_path / "out"
    code, lines, err = cli(cli_distill, ["method=cvdd", bad, f"paths.output_dir={out}", "logger=none"], monkeypatch,
                           capsys, cwd=tmp_path)
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and says in lines[0], err[-2000:]
    assert not (out / "distilled").exists() and not (out / "checkpoints").exists()

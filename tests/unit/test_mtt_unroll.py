"""MTT's functional unroll: k differentiable steps with the synthetic lr equal k manual SGD steps of a real network,
and the matching loss reaches the images and the synthetic lr."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from reta.data.registry import load_split
from reta.errors import RetaError
from reta.models import build_model
from reta.synthesis.process.config import TrajectorySpec
from reta.synthesis.process.trajectory import TrajectoryMatcher
from reta.training.experts import ExpertBuffer, flat_params, param_layout

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides

NET = {"name": "convnet", "kwargs": {"depth": 2, "width": 8, "norm": "instance", "first_padding": "dc"}}


def _fake_buffer(ds: dict, epochs: int) -> ExpertBuffer:
    """A buffer of one 'expert' whose snapshots are independent random initialisations (layout is what matters)."""
    snaps = []
    for e in range(epochs + 1):
        torch.manual_seed(100 + e)
        snaps.append(flat_params(build_model(NET, 10, 1, 28)))
    names, shapes = param_layout(build_model(NET, 10, 1, 28))
    meta = {"snapshots": epochs + 1, "param_names": names, "param_shapes": shapes}
    return ExpertBuffer(Path("fake"), meta, [torch.stack(snaps)])


@pytest.fixture()
def make(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=40, n_test=10, classes=10, gz=False)
    cfg = compose_cfg("distill", [*tiny_overrides(tmp_path, root), "method=mtt", "ipc=2"])
    train, ds = load_split(cfg.dataset, "train", None), OmegaConf.to_container(cfg.dataset)

    def build(**over) -> TrajectoryMatcher:
        m = {**OmegaConf.to_container(cfg.method), "net": NET, "dsa": {"strategy": "none"}, "lr_teacher": 0.05,
             **over}
        spec = TrajectorySpec.from_cfg(m, 2)
        return TrajectoryMatcher(spec, ds, 2, train, 0, torch.device("cpu"), _fake_buffer(ds, 3))

    return build


@pytest.mark.parametrize("batch_syn", [0, 6])
def test_unroll_equals_manual_sgd_with_the_synthetic_lr(make, batch_syn):
    k = 4
    matcher = make(batch_syn=batch_syn, syn_steps=k, max_start_epoch=1, expert_epochs=1)
    theta0 = matcher.experts.trajectories[0][0].clone()
    batches = []
    real_next = matcher.next_batch
    matcher.next_batch = lambda: batches.append(real_next()) or batches[-1]
    theta_k = matcher.unroll(theta0.clone().requires_grad_(True), k)
    assert len(batches) == k and (batch_syn == 0 or all(len(b) == batch_syn for b in batches[:2]))

    net = copy.deepcopy(matcher.student.net)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(theta0.clone(), net.parameters())
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x_all, y_all = matcher.images.data.detach(), matcher.images.labels
    for idx in batches:
        opt.zero_grad()
        F.cross_entropy(net(x_all[idx]), y_all[idx]).backward()
        opt.step()
    manual = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    assert not torch.equal(manual, theta0), "the manual steps did not move the network"
    torch.testing.assert_close(theta_k.detach(), manual, rtol=1e-5, atol=1e-6)


def test_matching_loss_reaches_images_and_synthetic_lr(make):
    matcher = make(syn_steps=3, max_start_epoch=2, expert_epochs=1)
    before_x, before_lr = matcher.images.data.detach().clone(), float(matcher.syn_lr.detach())
    terms = matcher.step()
    assert terms["match"] > 0 and matcher.iteration == 1
    assert matcher.images.data.grad.abs().sum() > 0 and matcher.syn_lr.grad.abs() > 0
    assert not torch.equal(matcher.images.data.detach(), before_x) and float(matcher.syn_lr.detach()) != before_lr


def test_buffer_too_short_or_of_another_layout_is_one_line(make):
    with pytest.raises(RetaError, match="needs expert trajectories of >= 4 epochs"):
        make(max_start_epoch=3, expert_epochs=2)
    with pytest.raises(RetaError, match="parameter layout"):
        make(net={"name": "convnet", "kwargs": {"depth": 2, "width": 4, "norm": "instance"}})

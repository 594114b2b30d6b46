"""CV-DD's committee vote in the BN wing: the voters of every IPC slot, the two-voter loss against its formula, and the
synthesis module forwarding every voter on the same augmented batch."""

from __future__ import annotations

import itertools
import warnings

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from reta.errors import RetaError
from reta.models import build_model
from reta.synthesis.bn.committee import CommitteeLoss, voter_schedule
from reta.synthesis.bn.init import NoiseInit
from reta.synthesis.bn.matching import TeacherSlot
from reta.synthesis.bn.module import SynthesisModule
from reta.synthesis.bn.schedule import StageSchedule
from reta.synthesis.bn.step import AugmentSpec, SynthesisStep, Voter
from reta.training.committee import prior_weights
from reta.training.teacher_cache import teacher_specs

from helpers import compose_cfg

ACC = [63.0, 65.3, 68.5, 67.6, 67.4]  # CV-DD's CIFAR-10 priors: R18, R50, SV2, MBV2, D121


class Committee:
    """What ``CommitteeLoss.bind`` reads of the synthesis module."""

    def __init__(self, teachers, ipc=1, seed=0):
        self.teachers, self.ipc, self.seed = teachers, ipc, seed


def slots(n, accs=None):
    accs = accs or [0.5] * n
    return [TeacherSlot(f"t{i}", nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), 0.01, meta={"test_acc": a})
            for i, a in zip(range(n), accs)]


def test_ipc1_votes_with_the_two_highest_priors_in_every_slot():
    assert voter_schedule("fixed_top", 2, ACC, 3, 0) == [(2, 3)] * 3  # SV2 68.5, MBV2 67.6
    assert voter_schedule("fixed_top", 2, [50.0, 70.0, 70.0], 1, 0) == [(1, 2)]  # ties: the earlier teacher


def test_ipc10_slot_k_votes_with_the_kth_pair_in_order_and_wraps_around():
    pairs = voter_schedule("enumerate", 2, ACC, 10, 0)
    # CV-DD --model-setting 5 lists the 10 pairs of [R18, R50, SV2, MBV2, D121] in exactly this order
    assert pairs == [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]
    three = voter_schedule("enumerate", 2, [60.0, 61.0, 62.0], 10, 0)  # 3 pairs for 10 slots
    assert three == [list(itertools.combinations(range(3), 2))[k % 3] for k in range(10)]


def test_random_pairs_are_seeded_per_slot_and_reproducible():
    a = voter_schedule("random", 2, ACC, 50, seed=3)
    assert a == voter_schedule("random", 2, ACC, 50, seed=3)
    assert a[:20] == voter_schedule("random", 2, ACC, 20, seed=3)  # a slot's pair does not depend on the IPC
    assert a != voter_schedule("random", 2, ACC, 50, seed=4)
    assert all(len(set(p)) == 2 and p == tuple(sorted(p)) and max(p) < 5 for p in a)
    assert len(set(a)) > 5  # the pairs vary over the slots


def test_selection_by_ipc_and_named_pairs_bind_to_the_slots():
    term = CommitteeLoss(priors=ACC, voters=2, selection={"1": ["t4", "t3"], "10": "enumerate", "default": "random"})
    term.bind(Committee(slots(5), ipc=1))
    assert term.schedule == [(3, 4)] and term.select_voters(0, 7, 5) == (3, 4)
    assert term.slot_weights[0].tolist() == pytest.approx(prior_weights([67.6, 67.4], 5.0).tolist())
    term.bind(Committee(slots(5), ipc=10))
    assert term.schedule[9] == (3, 4) and term.mode == "enumerate"
    term.bind(Committee(slots(5), ipc=2, seed=1))
    assert term.schedule == voter_schedule("random", 2, ACC, 2, 1)
    rotation = CommitteeLoss(priors=ACC, voters=1, selection="rotate")
    rotation.bind(Committee(slots(5)))
    assert [rotation.select_voters(0, t, 5) for t in range(6)] == [(0,), (1,), (2,), (3,), (4,), (0,)]


@pytest.mark.parametrize("kwargs, match", [
    ({"voters": 0}, "voters must be an integer >= 1"),
    ({"selection": "best"}, "selection must be one of"),
    ({"selection": {"1": "enumerate", "default": "nope"}}, "got 'nope'"),
    ({"selection": {1: "enumerate"}}, "keys are IPCs written as strings"),
    ({"voters": 2, "selection": "rotate"}, "needs voters: 1"),
    ({"priors": "student_acc"}, "priors must be"),
    ({"temperature": 0.0}, "temperature must be > 0"),
])
def test_bad_committee_options_are_refused(kwargs, match):
    with pytest.raises((ValueError, RetaError), match=match):
        CommitteeLoss(**{"voters": 2, "selection": "random", **kwargs})


def test_bad_bindings_are_refused():
    with pytest.raises(RetaError, match="voters=3 but only 2 teachers"):
        CommitteeLoss(priors=[1.0, 2.0], voters=3, selection="enumerate").bind(Committee(slots(2)))
    with pytest.raises(RetaError, match=r"names \['t9'\], not teachers of this run; valid: \['t0', 't1'\]"):
        CommitteeLoss(priors=[1.0, 2.0], voters=2, selection=["t0", "t9"]).bind(Committee(slots(2)))
    with pytest.raises(RetaError, match="no entry for ipc 2"):
        CommitteeLoss(priors=[1.0, 2.0], voters=2, selection={"1": "fixed_top"}).bind(Committee(slots(2), ipc=2))
    with pytest.raises(RetaError, match="3 priors for 2 teachers"):
        CommitteeLoss(priors=[1.0, 2.0, 3.0], voters=2, selection="random").bind(Committee(slots(2)))


def _bn_term_by_hand(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    a = conv(x).float()
    mean, var = a.mean((0, 2, 3)), a.var((0, 2, 3), unbiased=False)
    return 10.0 * (torch.linalg.vector_norm(bn.running_mean - mean) + torch.linalg.vector_norm(bn.running_var - var))


def test_two_voter_loss_equals_the_prior_weighted_sum_of_ce_and_bn_by_hand():
    torch.manual_seed(0)
    nets = []
    for _ in range(2):
        net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 9, 4))
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2.0)
        nets.append(net.double())
    teachers = [TeacherSlot(f"t{i}", n, r_bn=r, meta={"test_acc": a})
                for i, (n, r, a) in enumerate(zip(nets, [0.01, 0.05], [0.6, 0.7]))]
    term = CommitteeLoss(priors="teacher_acc", temperature=5.0, ce_weight=1.0, voters=2, selection="fixed_top")
    term.bind(Committee(teachers))
    x = torch.randn(4, 1, 5, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    voters = []
    for i, t in enumerate(teachers):
        with t.hooks.capture():
            voters.append(Voter(i, t, t.model(x)))
    step = SynthesisStep(0, 0, 0, 0, 0, 5, 0.1, x, x, y, teachers[0], 0, voters[0].logits, voters=voters)
    got = term(step)
    e = torch.exp(torch.tensor([60.0, 70.0], dtype=torch.float64) / 5.0)
    w = e / e.sum()
    want = 0.0
    for wi, net, r in zip(w, nets, [0.01, 0.05]):
        logits = net(x)
        ce = -(logits.log_softmax(1)[torch.arange(4), y]).mean()
        want = want + wi * (ce + r * _bn_term_by_hand(net[0], net[1], x))
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


class VoterSpy(L.Callback):
    """Checks, in the step, that every voter's logits are its teacher's output on the step's augmented batch."""

    def __init__(self):
        self.seen = []

    def on_synthesis_step(self, trainer, module, step):
        for v in step.voters:
            with torch.no_grad():
                torch.testing.assert_close(v.teacher.model(step.augmented), v.logits.detach())
        self.seen.append((step.slot, tuple(v.index for v in step.voters), float(step.losses["committee"])))


def test_the_module_forwards_the_slots_voters_on_the_same_augmented_batch():
    teachers = []
    for i in range(3):
        torch.manual_seed(i)
        teachers.append(TeacherSlot(f"t{i}", build_model({"name": "convnet_tiny", "kwargs": {}}, 4, 1, 16), 0.01))
    term = CommitteeLoss(priors=[60.0, 61.0, 62.0], voters=2, selection="enumerate")
    module = SynthesisModule(
        teachers, StageSchedule([16], [3], 0.1), num_classes=4, ipc=4, image_size=16, channels=1, mean=[0.3],
        std=[0.35], init=NoiseInit(), augment=AugmentSpec(jitter=2), losses=[term], seed=0,
    )
    term.bind(module)
    spy = VoterSpy()
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, callbacks=[spy])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module)
    assert [(s, v) for s, v, _ in spy.seen] == [(k, p) for k, p in zip(range(4), [(0, 1), (0, 2), (1, 2), (0, 1)])
                                                for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(loss)) for *_, loss in spy.seen)
    with pytest.raises(RetaError, match="at most one term may select the voters"):
        SynthesisModule(teachers, StageSchedule([16], [3], 0.1), 4, 1, 16, 1, [0.3], [0.35], NoiseInit(),
                        AugmentSpec(), [term, CommitteeLoss(priors=[1.0, 2.0, 3.0], voters=1, selection="rotate")])


@pytest.mark.parametrize("dataset", ["cifar100", "imagenette", "imagenet1k", "imagewoof", "tiny_imagenet"])
def test_the_paper_rows_vote_in_pairs_with_teachers_they_have(dataset):
    cfg = compose_cfg("distill", ["paths.output_dir=/tmp/reta-cvdd-test", "ipc=1", "method=cvdd", f"dataset={dataset}"])
    labels = [label for label, _ in teacher_specs(cfg, cfg.method.teachers)]
    term = OmegaConf.to_container(cfg.method.losses[0])
    assert term["voters"] == 2 and term["selection"]["10"] == "enumerate" and term["selection"]["default"] == "random"
    pair = term["selection"]["1"]
    assert pair == "fixed_top" or (len(pair) == 2 and set(pair) <= set(labels)), (pair, labels)

"""SynthesisModule: round robin, per-stage optimisers, clamping, the callback API RETA builds on, NaN handling."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from torch import nn

from reta.errors import NonFiniteLossError
from reta.models import build_model
from reta.synthesis.bn.init import NoiseInit
from reta.synthesis.bn.matching import BNMatchingLoss, CrossEntropyLoss, TeacherSlot
from reta.synthesis.bn.module import SynthesisModule
from reta.synthesis.bn.schedule import StageSchedule
from reta.synthesis.bn.step import AugmentSpec, synthesis_augment

MEAN, STD = [0.286], [0.353]


def teacher(seed: int, name: str) -> TeacherSlot:
    torch.manual_seed(seed)
    return TeacherSlot(name, build_model({"name": "convnet_tiny", "kwargs": {}}, 4, 1, 16), r_bn=0.01 * (seed + 1))


def make_module(num_teachers=1, budgets=(3, 2), ipc=2, seed=0) -> SynthesisModule:
    teachers = [teacher(i, f"t{i}") for i in range(num_teachers)]
    return SynthesisModule(
        teachers, StageSchedule([16] * len(budgets), list(budgets), 0.25), num_classes=4, ipc=ipc, image_size=16,
        channels=1, mean=MEAN, std=STD, init=NoiseInit(), augment=AugmentSpec(jitter=2),
        losses=[CrossEntropyLoss(), BNMatchingLoss()], seed=seed,
    )


def fit(module, callbacks=()):
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, callbacks=list(callbacks))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module)
    return trainer


class Recorder(L.Callback):
    """Uses every synthesis hook the way RETA's PTA callback will."""

    def __init__(self):
        self.steps, self.stage_ends, self.jobs, self.opts = [], [], [], []

    def on_synthesis_job_start(self, trainer, module, job):
        self.jobs.append(("start", job.index, job.slot))

    def on_synthesis_step(self, trainer, module, step):
        assert step.images is module.x and step.images.requires_grad
        assert tuple(step.images.shape[-2:]) == (step.resolution, step.resolution)
        before = [h.term.detach().clone() for h in step.teacher.hooks.hooks]
        feats = module.teacher_features(step.images)  # separate forward, hooks off
        assert all(torch.equal(b, h.term.detach()) for b, h in zip(before, step.teacher.hooks.hooks))
        step.add_loss("extra", feats.pow(2).mean(), weight=1e-3)
        self.steps.append((step.job, step.step, step.teacher_index, step.slot, step.classes.tolist(), step.stage))
        self.opts.append(id(module.opt))

    def on_synthesis_stage_end(self, trainer, module, event):
        self.stage_ends.append((event.job, event.stage, event.next_size))

    def on_synthesis_job_end(self, trainer, module, job):
        self.jobs.append(("end", job.index, job.slot))


def test_round_robin_callback_api_and_stages():
    module, rec = make_module(num_teachers=3, budgets=(3, 2)), Recorder()
    fit(module, [rec])
    assert module.next_step == module.total_steps == 2 * 5
    # teacher t mod M within every job; jobs = slots (one image per class per batch)
    assert [s[2] for s in rec.steps] == [0, 1, 2, 0, 1] * 2
    assert [(s[0], s[3], s[4]) for s in rec.steps][::5] == [(0, 0, [0, 1, 2, 3]), (1, 1, [0, 1, 2, 3])]
    assert [s[5] for s in rec.steps] == [0, 0, 0, 1, 1] * 2
    assert rec.stage_ends == [(0, 0, 16), (0, 1, None), (1, 0, 16), (1, 1, None)]
    assert rec.jobs == [("start", 0, 0), ("end", 0, 0), ("start", 1, 1), ("end", 1, 1)]
    # a fresh optimiser at every stage start, reused within a stage
    assert rec.opts[0] == rec.opts[1] == rec.opts[2] and rec.opts[3] == rec.opts[4] and rec.opts[2] != rec.opts[3]
    assert module.opt.defaults["betas"] == (0.5, 0.9)
    px = module.images.pixels()
    assert px.shape == (8, 1, 16, 16) and float(px.min()) >= 0 and float(px.max()) <= 1
    lo, hi = (0 - MEAN[0]) / STD[0], (1 - MEAN[0]) / STD[0]
    assert float(module.images.data.min()) >= lo - 1e-6 and float(module.images.data.max()) <= hi + 1e-6
    assert not module.teacher_models[0].training  # Lightning's train() leaves the teachers in eval mode


def test_same_seed_same_images_and_seed_matters():
    a, b, c = make_module(seed=1), make_module(seed=1), make_module(seed=2)
    for m in (a, b, c):
        fit(m)
    assert torch.equal(a.images.data, b.images.data)
    assert not torch.equal(a.images.data, c.images.data)


def test_nonfinite_term_stops_naming_it():
    class Boom(L.Callback):
        def on_synthesis_step(self, trainer, module, step):
            step.add_loss("topo", torch.tensor(float("nan")) if step.global_step == 3 else torch.zeros(()))

    module = make_module()
    with pytest.raises(NonFiniteLossError, match=r"loss term 'topo' became nan at step 3 \(job 0, slot 0, stage 1"):
        fit(module, [Boom()])
    # finiteness is read back from the device lazily (logging steps, stage/job ends, checkpoints): the error names
    # the first bad step, and the run stops before the job's images are stored
    assert 3 <= module.next_step < module.schedule.total
    assert torch.isfinite(module.images.data).all()


def test_shared_augmentation_is_one_box_for_the_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(3, 1, 1, 1)
    out = synthesis_augment(x, 4, AugmentSpec(rrc=True, jitter=1), g)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    out = synthesis_augment(x, 4, AugmentSpec(rrc=False, flip=False, jitter=0), g)
    assert torch.equal(out, x)


def test_state_round_trip_restores_rng_and_optimizer():
    module = make_module()
    fit(module)
    state = module.synthesis_state()
    other = make_module()
    other.load_synthesis_state(state)
    assert other.next_step == module.next_step and torch.equal(other.images.data, module.images.data)
    assert torch.equal(other.gen.get_state(), module.gen.get_state())
    assert isinstance(other.x, nn.Parameter) and torch.equal(other.x, module.x)
    assert other.opt.state_dict()["state"][0]["step"] == module.opt.state_dict()["state"][0]["step"]

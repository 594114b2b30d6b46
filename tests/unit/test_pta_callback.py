"""PTA callback (reta.synthesis.reta.pta) on a real SynthesisModule with a tiny frozen conv teacher.

docs/methods.md §4.2, §4.6.7: the gradient of L_topo reaches the in-batch pixels through the frozen teacher (separate
eval-mode forward, BN hooks off); the synthetic cache is refreshed every T steps and at stage boundaries with the
finished slots' images and the pending slots' anchors; IPC 1 → one warning and off; a NaN stops the run naming it.
"""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from reta.data.augment import normalize
from reta.data.base import TensorImageDataset
from reta.errors import NonFiniteLossError, RetaError
from reta.models import build_model
from reta.synthesis.bn.init import PatchBank, PatchInit, build_patch_pool
from reta.synthesis.bn.matching import BNMatchingLoss, CrossEntropyLoss, TeacherSlot
from reta.synthesis.bn.module import SynthesisModule
from reta.synthesis.bn.schedule import StageSchedule
from reta.synthesis.bn.step import AugmentSpec
from reta.synthesis.reta.pta import IPC1_WARNING, TopologyAlignment
from reta.synthesis.runtime import resample
from reta.topology.loss import TopologyLoss

MEAN, STD, SIZE, CLASSES = [0.3], [0.3], 16, 4
PTA = dict(lam_topo=1.0, k=3, grid=8, sigma=0.1, num_subsets=4, refresh_every=2, features="separate",
           targets="refresh")


def dataset(per_class: int = 8) -> TensorImageDataset:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(CLASSES).repeat(per_class)
    imgs = torch.randint(0, 60, (len(labels), 1, SIZE, SIZE), generator=g)
    for i, c in enumerate(labels.tolist()):
        imgs[i, :, 4 * c : 4 * c + 4] += 150 + torch.randint(0, 40, (1,), generator=g)
    return TensorImageDataset(imgs.clamp(0, 255).to(torch.uint8), labels, [str(c) for c in range(CLASSES)])


def make_module(ipc: int = 3, budgets=(3, 2), teachers: int = 1) -> SynthesisModule:
    torch.manual_seed(0)
    model = build_model({"name": "convnet_tiny", "kwargs": {}}, CLASSES, 1, SIZE)
    slot = TeacherSlot("tiny", model, r_bn=0.01)
    others = [TeacherSlot(f"tiny{i}", build_model({"name": "convnet_tiny", "kwargs": {}}, CLASSES, 1, SIZE), r_bn=0.01)
              for i in range(1, teachers)]
    ds = dataset()
    pool = build_patch_pool(ds, slot.model, MEAN, STD, CLASSES, SIZE, mipc=8, num_crop=1, seed=0)
    bank = PatchBank(pool, ds, ipc, "easy")
    return SynthesisModule(
        [slot, *others], StageSchedule([SIZE] * len(budgets), list(budgets), 0.25), num_classes=CLASSES, ipc=ipc,
        image_size=SIZE, channels=1, mean=MEAN, std=STD, init=PatchInit(bank), augment=AugmentSpec(jitter=2),
        losses=[CrossEntropyLoss(), BNMatchingLoss()], seed=0, patch_bank=bank, patch_pool=pool, train_set=ds,
    )


def fit(module, callbacks):
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, callbacks=list(callbacks))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module)
    return [w for w in caught if "PTA" in str(w.message)]


class Before(L.Callback):
    def on_synthesis_step(self, trainer, module, step):
        self.terms = [h.term for h in step.teacher.hooks.hooks]


class Probe(L.Callback):
    """After PTA: its term's gradient w.r.t. the in-batch pixels, and the BN statistics it must not touch."""

    def __init__(self, before: Before, pta: TopologyAlignment) -> None:
        self.before, self.pta, self.rows = before, pta, []

    def on_synthesis_step(self, trainer, module, step):
        assert all(a is h.term for a, h in zip(self.before.terms, step.teacher.hooks.hooks))  # hooks were off
        assert not step.teacher.hooks.enabled
        if "topo" not in step.losses:
            self.rows.append(None)
            return
        (grad,) = torch.autograd.grad(step.losses["topo"], step.images, retain_graph=True)
        assert all(p.grad is None and not p.requires_grad for p in step.teacher.model.parameters())
        cache = {c: self.pta._cache[c].clone() for c in step.classes.tolist()}
        self.rows.append((step.job, step.slot, step.step, step.stage, float(step.losses["topo"]), grad, cache,
                          dict(self.pta._live)))


def test_pta_gradient_reaches_pixels_through_the_frozen_teacher_and_cache_holds_slots():
    module, before = make_module(ipc=3), Before()
    pta = TopologyAlignment(**PTA)
    probe = Probe(before, pta)
    assert fit(module, [before, pta, probe]) == []
    rows = [r for r in probe.rows if r is not None]
    assert len(rows) == module.total_steps == 3 * 5
    grads = torch.stack([r[5] for r in rows])
    assert torch.isfinite(grads).all()
    assert all(float(r[5].abs().sum()) > 0 for r in rows if r[4] > 0)  # a non-zero loss moves the pixels
    assert sum(r[4] > 0 for r in rows) >= len(rows) // 2
    # refreshed at job/stage starts and every T = 2 steps: job steps 0, 2 (stage 0) and 3 (stage 1)
    assert pta.refreshes == 3 * 3
    # the cache of slot 1 holds slot 0's final image and slot 2's initial anchor, at the stage resolution
    job1 = next(r for r in rows if r[1] == 1 and r[2] == 0)
    c = 2
    assert job1[7][c] == 1  # the live image sits at row 1 (after one finished slot)
    with torch.no_grad():
        want = torch.cat([module.images.data[c * 3 + 0 : c * 3 + 1],
                          normalize(module.patch_bank.patches[c, 2:3], MEAN, STD)])
        want = F.normalize(module.teacher_features(resample(want, SIZE)), dim=1)
    assert torch.allclose(job1[6][c], want, atol=1e-6)
    assert pta.describe()["active"] and pta.describe()["mean_loss"] > 0


def test_pta_does_not_change_the_built_in_loss_terms_of_a_step():
    plain, with_pta = make_module(ipc=2, budgets=(2,)), make_module(ipc=2, budgets=(2,))

    class Losses(L.Callback):
        def __init__(self):
            self.rows = []

        def on_synthesis_step(self, trainer, module, step):
            self.rows.append({k: float(v.detach()) for k, v in step.losses.items()})

    a, b = Losses(), Losses()
    fit(plain, [a])
    fit(with_pta, [TopologyAlignment(**PTA), b])
    assert a.rows[0] == {k: v for k, v in b.rows[0].items() if k != "topo"} and "topo" in b.rows[0]


def test_ipc1_switches_pta_off_with_one_warning():
    module, before = make_module(ipc=1), Before()
    pta = TopologyAlignment(**PTA)
    probe = Probe(before, pta)
    caught = fit(module, [before, pta, probe])
    assert [str(w.message) for w in caught] == [IPC1_WARNING]
    assert probe.rows == [None] * module.total_steps
    assert pta.describe()["active"] is False and pta.describe()["disabled_reason"] == "ipc=1"


def test_a_nan_topology_term_stops_the_run_naming_it():
    class NanLoss(TopologyLoss):
        def forward(self, syn_clouds, class_ids, real_pools=None):
            return super().forward(syn_clouds, class_ids) * float("nan")

    module = make_module(ipc=2, budgets=(2,))
    pta = TopologyAlignment(**PTA)
    pta.loss = NanLoss(k=3, grid=8, sigma=0.1, num_subsets=4)
    with pytest.raises(NonFiniteLossError, match=r"loss term 'topo' became nan at step 0"):
        fit(module, [pta])


def test_disabled_or_zero_weight_pta_adds_nothing():
    for cb in (TopologyAlignment(**{**PTA, "lam_topo": 0.0}), TopologyAlignment(enabled=False)):
        module, before = make_module(ipc=2, budgets=(2,)), Before()
        probe = Probe(before, cb)
        fit(module, [before, cb, probe])
        assert probe.rows == [None, None, None, None] and cb.refreshes == 0


@pytest.mark.parametrize(
    "kwargs,match",
    [({"lam_topo": -1.0}, "lam_topo must be"), ({"refresh_every": 0}, "refresh_every must be"),
     ({"k": 0}, "k must be >= 1"), ({"cutoff": "median"}, "unknown cutoff policy"), ({"kernel": "box"}, "kernel"),
     ({"pool_size": 1}, "pool_size must be"), ({"features": "cached"}, "features must be one of"),
     ({"targets": "always"}, "targets must be one of")],
)
def test_bad_pta_config_fails_at_build_time(kwargs, match):
    with pytest.raises(RetaError, match=match):
        TopologyAlignment(**kwargs)


class Targets(L.Callback):
    """The real target the loss holds for each class of every PTA step (after PTA ran)."""

    def __init__(self, pta: TopologyAlignment) -> None:
        self.pta, self.rows = pta, []

    def on_synthesis_step(self, trainer, module, step):
        self.rows.append({c: self.pta.loss.cached_target(c) for c in step.classes.tolist()})


class AlwaysEmbed(TopologyAlignment):
    """PTA that re-embeds the synthetic cache at every refresh (the behaviour before the embedding was reused)."""

    def _refresh_targets(self, classes):
        self._embedded = None
        super()._refresh_targets(classes)


def test_refresh_reuses_the_cache_embedding_within_a_job_and_changes_nothing():
    """Within a job the cache's members (finished slots, later slots' initial patches) are fixed, so refreshes at the
    same resolution reuse one embedding per job; the images are bit-identical to re-embedding at every refresh."""
    out = {}
    for cls in (TopologyAlignment, AlwaysEmbed):
        module, before = make_module(ipc=3), Before()
        pta = cls(**PTA)
        probe = Probe(before, pta)
        fit(module, [before, pta, probe])
        out[cls.__name__] = (pta, module.images.data.clone(), probe.rows)
    reused, images, rows = out["TopologyAlignment"]
    always, images_always, rows_always = out["AlwaysEmbed"]
    assert reused.refreshes == always.refreshes == 3 * 3
    assert reused.embeddings == 3 and always.embeddings == 3 * 3  # one per job (both stages share the resolution)
    assert torch.equal(images, images_always)
    for a, b in zip(rows, rows_always):
        assert a[4] == b[4] and all(torch.equal(a[6][c], b[6][c]) for c in a[6])  # same loss, same cache
    assert reused.describe()["embeddings"] == 3


def test_targets_once_draws_each_class_target_once_and_reuses_it():
    """targets=once: one draw per (class, cloud size) for the whole run — the same target object at every refresh,
    deterministic in the seed; targets=refresh: a new draw per class at every refresh."""
    runs = {}
    for mode in ("once", "refresh", "once"):
        module, pta = make_module(ipc=3), TopologyAlignment(**{**PTA, "targets": mode})
        probe = Targets(pta)
        fit(module, [pta, probe])
        runs.setdefault(mode, []).append((pta, probe, module.images.data.clone()))
    (once, probe, imgs), (again, _, imgs_again) = runs["once"]
    refresh, probe_r, _ = runs["refresh"][0]
    assert once.refreshes == refresh.refreshes == 3 * 3
    assert once.target_draws == CLASSES  # n = 3 for every class (patch bank): one (class, size) pair per class
    assert refresh.target_draws == refresh.refreshes * CLASSES
    for c in range(CLASSES):
        assert len({id(row[c]) for row in probe.rows}) == 1  # reused, never redrawn
        assert len({id(row[c]) for row in probe_r.rows}) == 3 * 3  # redrawn at every refresh
    targets = [probe.rows[0][c] for c in range(CLASSES)]
    assert len({t.images[0].sum().item() for t in targets}) == CLASSES  # per-class seeds give different draws
    assert torch.equal(imgs, imgs_again)  # the same seed gives the same targets and images
    assert once.describe()["targets"] == "once" and once.describe()["target_draws"] == CLASSES


def test_every_applies_the_term_on_every_nth_job_step_only():
    module, before = make_module(ipc=2, budgets=(3,)), Before()
    pta = TopologyAlignment(**{**PTA, "every": 2})
    probe = Probe(before, pta)
    fit(module, [before, pta, probe])
    assert [r is not None for r in probe.rows] == [True, False, True] * 2


def test_pta_defaults_have_one_source():
    """The topology keys' defaults live in TopologyConfig; method/reta.yaml shows the same values (the Fashion-MNIST
    λ_topo lives in method/per_dataset/reta_fashion_mnist.yaml), and the callback rejects a misspelt key."""
    import dataclasses

    from omegaconf import OmegaConf

    from reta.errors import RetaError
    from reta.synthesis.reta.pta import TopologyAlignment
    from reta.topology.loss import TopologyConfig

    from helpers import CONF_DIR

    pta = OmegaConf.to_container(OmegaConf.load(f"{CONF_DIR}/method/reta.yaml"))["callbacks"]["pta"]
    assert {k: pta[k] for k in dataclasses.asdict(TopologyConfig())} == dataclasses.asdict(TopologyConfig())
    cb = TopologyAlignment(**{k: v for k, v in pta.items() if k != "_target_"})
    assert cb.topology == TopologyConfig() and cb.lam_topo == pta["lam_topo"]
    with pytest.raises(RetaError, match=r"unknown keys \['kk'\]"):
        TopologyAlignment(kk=3)


class Forwards(L.Callback):
    """Counts forward passes through every teacher's first conv (whole forwards and feature passes) per step."""

    def __init__(self) -> None:
        self.calls, self.per_step = 0, []

    def setup(self, trainer, module, stage):
        for slot in module.teachers:
            conv = next(m for m in slot.model.modules() if isinstance(m, torch.nn.Conv2d))
            conv.register_forward_hook(lambda *a: setattr(self, "calls", self.calls + 1))

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.calls = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.per_step.append(self.calls)


def test_step_features_reuse_the_steps_forward_and_apply_on_the_feature_teachers_steps_only():
    module, before = make_module(ipc=2, budgets=(4,), teachers=2), Before()
    pta = TopologyAlignment(**{**PTA, "features": "step", "refresh_every": 100})
    probe, fwd = Probe(before, pta), Forwards()
    fit(module, [fwd, before, pta, probe])
    assert [r is not None for r in probe.rows] == [True, False, True, False] * 2  # teacher 0 on even steps only
    grads = [r[5] for r in probe.rows if r is not None]
    assert all(torch.isfinite(g).all() and float(g.abs().sum()) > 0 for g in grads)  # through the step's graph
    # one teacher forward per step (a job's first step adds the pool build and the refresh's no-grad passes)
    assert fwd.per_step[1:4] == [1, 1, 1] and fwd.per_step[5:8] == [1, 1, 1]
    sep, fwd_sep = make_module(ipc=2, budgets=(4,), teachers=2), Forwards()
    fit(sep, [fwd_sep, TopologyAlignment(**{**PTA, "refresh_every": 100})])
    assert fwd_sep.per_step[1:4] == [2, 2, 2]  # separate: the step's forward + PTA's own
    assert pta._hook is None  # removed at teardown


def test_step_features_are_the_feature_teachers_penultimate_features_of_the_augmented_batch():
    module = make_module(ipc=2, budgets=(2,))
    pta = TopologyAlignment(**{**PTA, "features": "step"})
    diffs = []

    class Peek(L.Callback):  # runs before PTA in the step: sees what PTA is about to use
        def on_synthesis_step(self, trainer, m, step):
            got = pta._captured.detach()
            want = m.teacher_features(step.augmented.detach())
            diffs.append(float((got.flatten(1) - want.flatten(1)).abs().max()))

    fit(module, [Peek(), pta])
    assert len(diffs) == module.total_steps and max(diffs) < 1e-5
    assert pta.describe()["features"] == "step" and pta.describe()["mean_loss"] is not None

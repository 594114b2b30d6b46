"""Stage / resolution / LR schedule (docs/methods.md §3.2-§3.3), job layout (§3.4) and the residual merge formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from reta.errors import RetaError
from reta.synthesis.bn.anchors import AnchorProvider, StageEnd, build_anchor_provider
from reta.synthesis.bn.init import band_ranks
from reta.synthesis.bn.residual import ResidualConnection, check_alpha, residual_merge
from reta.synthesis.bn.schedule import StageSchedule
from reta.synthesis.bn.step import make_jobs


def test_stage_positions_resolutions_and_global_cosine():
    s = StageSchedule([200, 224, 200, 224], [3, 2, 2, 1], 0.25)
    assert s.total == 8 and s.num_stages == 4
    stages = [s.position(t).stage for t in range(8)]
    sizes = [s.position(t).size for t in range(8)]
    assert stages == [0, 0, 0, 1, 1, 2, 2, 3]
    assert sizes == [200, 200, 200, 224, 224, 200, 200, 224]
    assert [t for t in range(8) if s.position(t).first_in_stage] == [0, 3, 5, 7]
    assert [t for t in range(8) if s.position(t).last_in_stage] == [2, 4, 6, 7]
    assert [s.position(t).last_stage for t in range(8)] == [False] * 7 + [True]
    for t in range(8):  # one cosine over the whole job: no restart at stage boundaries
        assert s.lr_at(t) == pytest.approx(0.5 * (1 + math.cos(math.pi * t / 8)) * 0.25)
    assert s.lr_at(0) == 0.25 and s.lr_at(4) == pytest.approx(0.125)
    assert all(s.lr_at(t + 1) < s.lr_at(t) for t in range(7))
    with pytest.raises(IndexError):
        s.position(8)


@pytest.mark.parametrize(
    "sizes,budgets,lr,match",
    [
        ([28, 28], [10], 0.25, "same length"),
        ([], [], 0.25, "same length"),
        ([28], [0], 0.25, "positive integer"),
        ([28, -1], [1, 1], 0.25, "positive integer"),
        ([28], [1.5], 0.25, "positive integer"),
        ([28], [10], 0.0, "lr"),
    ],
)
def test_bad_schedules_fail_with_one_line(sizes, budgets, lr, match):
    with pytest.raises(RetaError, match=match) as err:
        StageSchedule(sizes, budgets, lr)
    assert "\n" not in str(err.value)


def test_jobs_are_slots_outer_class_chunks_inner():
    jobs = make_jobs(5, 2, classes_per_batch=2)
    assert [(j.slot, j.classes) for j in jobs] == [
        (0, (0, 1)), (0, (2, 3)), (0, (4,)), (1, (0, 1)), (1, (2, 3)), (1, (4,))
    ]
    assert [j.classes for j in make_jobs(3, 1)] == [(0, 1, 2)]  # default: one image per class per batch
    with pytest.raises(RetaError):
        make_jobs(3, 1, classes_per_batch=0)


def test_band_ranks():
    assert band_ranks(10, 3, "easy") == [0, 1, 2]
    assert band_ranks(10, 3, "medium") == [3, 4, 5]
    assert band_ranks(10, 3, "hard") == [7, 8, 9]
    assert band_ranks(10, 3, "spread") == [0, 4, 9]
    with pytest.raises(RetaError, match="raise mipc"):
        band_ranks(2, 3, "easy")
    with pytest.raises(RetaError, match="unknown band"):
        band_ranks(10, 3, "middle")


def test_merge_formula():
    g = torch.Generator().manual_seed(0)
    x, a = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 16, 16, generator=g)
    out = residual_merge(x, a, 0.3, 12)
    up = lambda t: F.interpolate(t, size=(12, 12), mode="bilinear", align_corners=False)  # noqa: E731
    torch.testing.assert_close(out, 0.3 * up(x) + 0.7 * up(a))
    same = torch.randn(2, 1, 8, 8, generator=g)
    torch.testing.assert_close(residual_merge(x, same, 0.5, 8), 0.5 * x + 0.5 * same)  # no resample at equal size
    assert torch.equal(residual_merge(x, same, 1.0, 8), x)
    torch.testing.assert_close(residual_merge(x, same, 0.0, 8), same)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "half", True])
def test_alpha_outside_unit_interval_is_rejected(alpha):
    with pytest.raises(RetaError, match=r"alpha must be a number in \[0, 1\]"):
        check_alpha(alpha)


def test_residual_callback_uses_a_swappable_provider():
    class Constant(AnchorProvider):
        needs_pool = False

        def __init__(self):
            self.events = []

        def anchors(self, event):
            self.events.append(event)
            return torch.full_like(event.images, 2.0)

    class FakeModule:
        replaced = None

        def replace_images(self, new):
            self.replaced = new

    provider, module = Constant(), FakeModule()
    cb = ResidualConnection(0.25, provider)
    cb.setup(None, module, "fit")
    x = torch.zeros(3, 1, 4, 4)
    event = StageEnd(0, 1, torch.tensor([0, 1, 2]), 0, 4, 6, x)
    cb.on_synthesis_stage_end(None, module, event)
    assert provider.events == [event] and module.replaced.shape == (3, 1, 6, 6)
    torch.testing.assert_close(module.replaced, torch.full((3, 1, 6, 6), 1.5))
    module.replaced = None
    cb.on_synthesis_stage_end(None, module, StageEnd(0, 1, torch.tensor([0]), 3, 4, None, x))  # last stage: no merge
    assert module.replaced is None and cb.state_dict()["merges"] == 1


def test_anchor_provider_config_errors():
    static = "reta.synthesis.bn.anchors.StaticPatchAnchors"
    assert build_anchor_provider({"_target_": static}).kind == "static"
    assert build_anchor_provider(None).kind == "static"
    with pytest.raises(RetaError, match="reta.synthesis.bn.anchors.Nearest"):
        build_anchor_provider({"_target_": "reta.synthesis.bn.anchors.Nearest"})
    with pytest.raises(RetaError, match=r"keys \['lam'\]") as err:
        build_anchor_provider({"_target_": static, "lam": 0.1})
    assert "\n" not in str(err.value)
    with pytest.raises(RetaError, match="_target_ must name"):
        build_anchor_provider({"lam": 0.1})


def test_method_configs_per_dataset_and_per_ipc():
    from reta.synthesis.bn.family import BNMethodConfig

    from helpers import compose_cfg

    base = ["paths.output_dir=/tmp/x", "paths.cache_dir=/tmp/c"]
    fm = compose_cfg("distill", [*base, "method=fadrm"]).method  # + method/per_dataset/fadrm_fashion_mnist.yaml
    assert (fm.scale, fm.lr, fm.init.crop_scale) == ("cpu", 0.02, [1.0, 1.0]) and fm.stages.sizes is None
    one, ten = BNMethodConfig.from_cfg(fm, 1), BNMethodConfig.from_cfg(fm, 10)
    assert (one.lr, one.init.band) == (0.25, "easy") and (ten.lr, ten.init.band) == (0.02, "medium")
    c100 = compose_cfg("distill", [*base, "method=fadrm", "dataset=cifar100", "method.lr=0.1"]).method
    assert c100.scale == "paper" and c100.stages.budgets == [500] * 4 and c100.lr == 0.1  # the command line wins
    with pytest.raises(RetaError, match="per_ipc must map"):
        BNMethodConfig.from_cfg({**OmegaConf.to_container(fm), "per_ipc": {"one": {}}}, 1)
    with pytest.raises(RetaError, match=r"^method: unknown keys \['lrr'\]"):
        BNMethodConfig.from_cfg({**OmegaConf.to_container(fm), "per_ipc": {1: {"lrr": 0.1}}}, 1)

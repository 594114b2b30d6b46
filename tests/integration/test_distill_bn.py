"""reta-distill with the bn_matching methods on a tiny IDX fixture: outputs, resume, NaN stop, atomicity, bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch

import reta.data.distilled as distilled_io
from reta import distill
from reta.cli import distill as cli_distill
from reta.cli.common import check_group_choices
from reta.data.distilled import load_distilled
from reta.errors import NonFiniteLossError, RetaError
from reta.training import teacher_cache

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides, with_out

TINY = ["ipc=2", "method.stages.sizes=[28,28]", "method.stages.budgets=[3,3]", "method.init.mipc=6",
        "method.init.num_crop=2", "method.checkpoint_every=2", "method.log_every=1"]


class NanAt(L.Callback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_synthesis_step(self, trainer, module, step) -> None:
        value = float("inf") if step.global_step == self.at_step else 0.0
        step.add_loss("probe", torch.tensor(value))


@pytest.fixture()
def tiny(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    return tmp_path, tiny_overrides(tmp_path, root)


@pytest.mark.parametrize("method", ["fadrm", "fadrm_plus"])
def test_distill_writes_a_format_v1_set_with_teacher_meta(tiny, method):
    tmp_path, ov = tiny
    extra = (
        ["method.teachers=[convnet_tiny,{name:convnet,kwargs:{depth:1,width:4,norm:batch},label:c1}]"]
        if method == "fadrm_plus" else []
    )
    r = distill.run(compose_cfg("distill", [*ov, f"method={method}", *TINY, *extra]))
    out = tmp_path / "out" / "distilled"
    ds = load_distilled(out)
    assert Path(r["distilled"]) == out and (out / "grid.png").is_file()
    assert ds.images.shape == (20, 1, 28, 28) and ds.labels.tolist() == [c for c in range(10) for _ in range(2)]
    meta = ds.meta
    assert meta["method"] == method and meta["ipc"] == 2
    assert meta["teacher"]["name"] == "convnet_tiny" and meta["teacher"]["checkpoint_sha256"]
    assert 0.0 <= meta["teacher"]["test_acc"] <= 1.0
    n_teachers = 2 if method == "fadrm_plus" else 1
    assert len(meta["teachers"]) == n_teachers and meta["synthesis"]["round_robin"][0] == "convnet_tiny"
    assert meta["synthesis"]["residual"] == {"alpha": 0.5, "anchors": {"kind": "static"}}
    assert (tmp_path / "cache" / "patch_pools").is_dir()  # the teacher-scored selection is cached


def test_teacher_time_is_kept_out_of_synthesis_seconds(tiny, monkeypatch):
    """A teacher squeezed (or loaded) on first use is timed as ``teacher_seconds``, not as synthesis."""
    import time

    tmp_path, ov = tiny
    real_get = teacher_cache.get_teacher

    def slow_get(*a, **k):
        time.sleep(0.5)
        return real_get(*a, **k)

    monkeypatch.setattr(teacher_cache, "get_teacher", slow_get)
    start = time.perf_counter()
    distill.run(compose_cfg("distill", [*ov, "method=fadrm", *TINY]))
    wall = time.perf_counter() - start
    meta = load_distilled(tmp_path / "out" / "distilled").meta
    assert meta["teacher_seconds"] >= 0.5
    assert 0.0 <= meta["synthesis_seconds"] <= wall - meta["teacher_seconds"]


def test_resume_after_kill_gives_the_uninterrupted_images(tiny):
    tmp_path, ov = tiny
    marker = tmp_path / "killed.marker"
    kill = [f"+method.callbacks.kill={{_target_:helpers.KillAt,at_step:9,marker:'{marker}'}}"]
    base = [*ov, "method=fadrm", *TINY, *kill]
    marker.touch()  # the reference run is never killed
    ref = distill.run(compose_cfg("distill", with_out(base, tmp_path / "ref")))
    marker.unlink()
    run = with_out(base, tmp_path / "run")
    with pytest.raises(RuntimeError, match="killed"):
        distill.run(compose_cfg("distill", run))
    assert not (tmp_path / "run" / "distilled").exists()
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["module"]["next_step"] == 8 and state["module"]["opt"] is not None  # mid-stage, moments saved
    assert (tmp_path / "run" / "checkpoints" / "store.pt").is_file()  # finished images, written at job ends
    resumed = distill.run(compose_cfg("distill", [*run, "resume=true"]))
    a, b = load_distilled(ref["distilled"]), load_distilled(resumed["distilled"])
    assert torch.equal(a.images, b.images)
    with pytest.raises(RetaError, match="different configuration"):  # a changed config cannot resume that run
        distill.run(compose_cfg("distill", [*run, "resume=true", "method.lr=0.1"]))


def test_nonfinite_loss_stops_naming_the_term_and_keeps_the_checkpoint(tiny):
    tmp_path, ov = tiny
    nan = ["+method.callbacks.nan={_target_:test_distill_bn.NanAt,at_step:5}"]
    with pytest.raises(
        NonFiniteLossError, match=r"loss term 'probe' became inf at step 5 .*last good checkpoint: .*last.ckpt"
    ):
        distill.run(compose_cfg("distill", [*ov, "method=sre2l", *TINY, *nan]))
    state = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["module"]["next_step"] == 4
    assert not (tmp_path / "out" / "distilled").exists()


def test_a_killed_write_leaves_no_distilled_dir(tiny, monkeypatch):
    tmp_path, ov = tiny

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(distilled_io, "_write_grid", killed)
    with pytest.raises(KeyboardInterrupt):
        distill.run(compose_cfg("distill", [*ov, "method=random", "ipc=2"]))
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if "distilled" in p.name) == []


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["method.stages.sizes=[28,28]", "method.stages.budgets=[5]"], "same length"),
        (["method.residual.alpha=1.5"], r"alpha must be a number in \[0, 1\]"),
        (["+method.lrr=0.1"], r"unknown keys \['lrr'\]"),
        (["method.init.kind=zeros"], "init.kind must be one of noise, patch"),
        (["method.teachers=[convnet_d9]"], "unknown model config 'convnet_d9'"),
        (["method.stages.sizes=[14]", "method.stages.budgets=[2]"], "cannot take the stage resolution 14"),
        (["method.synthesize._target_=reta.synthesis.nope.synthesize"], "cannot load 'reta.synthesis.nope.synthesize'"),
        (["trainer.precision=16-mixed"], "does not support fp16 loss scaling"),
        (["method.losses=[{_target_:reta.synthesis.bn.matching.Nope}]"],
         r"method.losses\[0\] \(reta.synthesis.bn.matching.Nope\)"),
        (["method.losses=[{_target_:reta.synthesis.bn.matching.BNMatchingLoss},"
          "{_target_:reta.synthesis.bn.matching.BNMatchingLoss}]"], "term names must be unique"),
    ],
)
def test_bad_method_configs_fail_with_one_line(tiny, overrides, match):
    _, ov = tiny
    with pytest.raises(RetaError, match=match) as err:
        distill.run(compose_cfg("distill", [*ov, "method=fadrm", "ipc=2", *overrides]))
    assert "\n" not in str(err.value)


def test_unknown_method_group_option_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        check_group_choices(["method=fadrmm"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.startswith("error: unknown method 'fadrmm'; valid: ") and "fadrm_plus" in err


def test_cli_bad_stages_exit_2_with_one_line(tiny, monkeypatch, capsys):
    """The console script's wrapper, run in-process (a subprocess would spend ~10 s importing)."""
    tmp_path, ov = tiny
    monkeypatch.setattr(sys, "argv", ["reta-distill", *ov, "method=fadrm", "ipc=2", "method.stages.sizes=[28,28]",
                                      "method.stages.budgets=[1]"])
    with pytest.raises(SystemExit) as exit_:
        cli_distill.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        "error: stages: sizes [28, 28] and budgets [1] must be non-empty lists of the same length"
    ]
    assert "Traceback" not in err and not (tmp_path / "out" / "distilled").exists()


def test_a_loss_term_plugs_in_through_method_losses(tiny):
    tmp_path, ov = tiny
    base = [*ov, "method=sre2l", *TINY, "method.checkpoint_every=100"]
    default = distill.run(compose_cfg("distill", [*base, f"paths.output_dir={tmp_path / 'l0'}"]))
    terms = ("method.losses=[{_target_:reta.synthesis.bn.matching.CrossEntropyLoss,weight:1.0},"
             "{_target_:reta.synthesis.bn.matching.BNMatchingLoss},{_target_:helpers.TotalVariation,weight:10.0}]")
    tv = distill.run(compose_cfg("distill", [*base, terms, f"paths.output_dir={tmp_path / 'l1'}"]))
    a, b = (load_distilled(r["distilled"]) for r in (default, tv))
    assert [t["_target_"] for t in b.meta["synthesis"]["effective_method"]["losses"]][-1] == "helpers.TotalVariation"
    tv_of = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., 1:] - x[..., :-1]).abs().mean()  # noqa: E731
    assert tv_of(b.images) < tv_of(a.images)  # the extra term smooths the images

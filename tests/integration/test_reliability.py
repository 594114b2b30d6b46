"""The defects found by probing reta as a hostile new user, one reproduction each (tiny IDX fixture, small
budgets). The table in docs/reliability.md names these tests."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from reta import distill, evaluate, squeeze
from reta.cli import distill as cli_distill
from reta.cli import evaluate as cli_evaluate
from reta.cli import squeeze as cli_squeeze
from reta.data.distilled import load_distilled
from reta.data.registry import load_split
from reta.errors import (
    CheckpointError,
    DatasetNotFoundError,
    DivergenceError,
    NonFiniteLossError,
    RetaError,
    load_failure,
)
from reta.synthesis.dm import matcher as dm_matcher
from reta.training import teacher_cache
from reta.training.teacher_cache import teacher_entry

from fixtures import write_idx_dataset
from helpers import cli, compose_cfg, tiny_overrides, with_out

TINY_BN = ["ipc=2", "method.stages.sizes=[28,28]", "method.stages.budgets=[3,3]", "method.init.mipc=6",
           "method.init.num_crop=2", "method.checkpoint_every=2", "method.log_every=1"]
TINY_DM = ["method=dm", "ipc=1", "method.iterations=3", "method.batch_real=4", "method.embedder.kwargs.depth=2",
           "method.embedder.kwargs.width=8", "method.log_every=1", "method.checkpoint_every=1"]


@pytest.fixture()
def tiny(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    return tmp_path, tiny_overrides(tmp_path, root)


def no_work(*args, **kwargs):
    raise AssertionError("work started before the configuration was refused")


class PushAll(L.Callback):
    """From global step ``start`` on, a loss term that pushes every pixel up: with a large lr the pixels saturate."""

    def __init__(self, start: int) -> None:
        self.start = start

    def on_synthesis_step(self, trainer, module, step) -> None:
        if step.global_step >= self.start:
            step.add_loss("push", -1e3 * step.images.sum())


# ------------------------------------------------------------------------------------------------ defect 1
def test_second_run_into_a_finished_set_is_refused_before_any_work(tiny, monkeypatch):
    tmp_path, ov = tiny
    distill.run(compose_cfg("distill", [*ov, "method=random", "ipc=2", "seed=0"]))
    monkeypatch.setattr(distill, "load_split", no_work)
    with pytest.raises(RetaError, match=r"already holds a finished distilled set \(random, IPC 2, seed 0\); pass "
                                        r"resume=true to continue that run, overwrite=true to replace it"):
        distill.run(compose_cfg("distill", [*ov, "method=random", "ipc=2", "seed=1"]))
    assert load_distilled(tmp_path / "out" / "distilled").meta["seed"] == 0  # the first set is untouched
    with pytest.raises(RetaError, match="exclude each other"):
        distill.run(compose_cfg("distill", [*ov, "method=random", "ipc=2", "resume=true", "overwrite=true"]))
    monkeypatch.undo()
    distill.run(compose_cfg("distill", [*ov, "method=random", "ipc=2", "seed=1", "overwrite=true"]))
    assert load_distilled(tmp_path / "out" / "distilled").meta["seed"] == 1


def test_second_run_is_refused_by_the_cli_without_touching_the_run_dir(tiny, monkeypatch, capsys):
    tmp_path, ov = tiny
    out = tmp_path / "out"
    code, errors, err = cli(cli_distill, [*ov, "method=random", "ipc=2", "seed=0"], monkeypatch, capsys)
    assert code == 0, err
    record = {p: p.read_bytes() for p in [out / ".hydra" / "config.yaml", out / "distill.log"]}
    code, errors, err = cli(cli_distill, [*ov, "method=random", "ipc=2", "seed=1"], monkeypatch, capsys)
    assert code == 2 and len(errors) == 1 and "overwrite=true" in errors[0] and "Traceback" not in err
    assert {p: p.read_bytes() for p in record} == record  # Hydra's record and log of the finished run are kept


def test_an_interrupted_run_is_refused_without_resume(tiny):
    tmp_path, ov = tiny
    (tmp_path / "out" / "checkpoints").mkdir(parents=True)
    (tmp_path / "out" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(RetaError, match=r"already holds an interrupted run \(checkpoints/ or snapshots/\)"):
        distill.run(compose_cfg("distill", [*ov, "method=random", "ipc=2"]))


# ------------------------------------------------------------------------------------------------ defect 2
def test_output_dir_that_is_a_file_is_refused_at_start(tiny, monkeypatch, capsys):
    tmp_path, ov = tiny
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setattr(distill, "load_split", no_work)
    with pytest.raises(RetaError, match="exists and is not a directory"):
        distill.run(compose_cfg("distill", [*with_out(ov, afile), "method=random", "ipc=2"]))
    monkeypatch.undo()
    code, errors, err = cli(cli_distill, [*with_out(ov, afile / "sub"), "method=random", "ipc=2"], monkeypatch, capsys)
    assert code == 2 and errors == [f"error: paths.output_dir {afile / 'sub'}: its parent {afile} is a file, not a "
                                    "directory; choose another paths.output_dir"] and "Traceback" not in err


def test_impossible_output_dir_is_refused_at_start(tiny, monkeypatch, capsys):
    """/proc refuses new entries even to root, where permission bits would not."""
    _, ov = tiny
    code, errors, err = cli(cli_evaluate, [*with_out(ov, Path("/proc/reta-test/out")), "ipc=2"], monkeypatch, capsys)
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error: cannot write to /proc")
    assert "Traceback" not in err


def test_distilled_subdir_that_cannot_be_replaced_is_refused_before_synthesis(tiny, monkeypatch):
    tmp_path, ov = tiny
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "distilled").write_text("a file")  # save_distilled used to fail on it after the synthesis
    monkeypatch.setattr(distill, "load_split", no_work)
    with pytest.raises(RetaError, match="distilled exists and is not a directory"):
        distill.run(compose_cfg("distill", [*ov, "method=random", "ipc=2"]))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_distilled_dir_is_refused_before_synthesis(tiny, monkeypatch):
    tmp_path, ov = tiny
    distill.run(compose_cfg("distill", [*ov, "method=random", "ipc=2"]))
    (tmp_path / "out" / "distilled").chmod(0o500)
    try:
        monkeypatch.setattr(distill, "load_split", no_work)
        with pytest.raises(RetaError, match="cannot write to .*distilled"):
            distill.run(compose_cfg("distill", [*ov, "method=random", "ipc=2", "overwrite=true"]))
    finally:
        (tmp_path / "out" / "distilled").chmod(0o700)


# ------------------------------------------------------------------------------------------------ defect 3
def test_absurd_lr_is_refused_with_its_range(tiny):
    _, ov = tiny
    with pytest.raises(RetaError, match=r"method.lr must be a number in \(0, 2.83\] .* got 1e\+30"):
        distill.run(compose_cfg("distill", [*ov, "method=sre2l", *TINY_BN, "method.lr=1e30"]))


def test_saturating_pixels_stop_the_run_naming_the_term_and_the_last_good_checkpoint(tiny):
    tmp_path, ov = tiny
    push = ["+method.callbacks.push={_target_:test_reliability.PushAll,start:4}", "method.lr=2.5",
            "method.stages.budgets=[10,10]"]
    with pytest.raises(DivergenceError, match=r"synthesis diverged at step \d+ .*% of the pixels are clamped at 0 or 1"
                                              r".*loss term '(ce|bn|push)' grew .*last good checkpoint: .*last.ckpt"):
        distill.run(compose_cfg("distill", [*ov, "method=sre2l", *TINY_BN, *push]))
    state = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["module"]["next_step"] == 4  # written before the push began; the diverged steps are not saved
    assert not (tmp_path / "out" / "distilled").exists()


# ------------------------------------------------------------------------------------------------ defect 4 is in
# tests/unit/test_configs.py (test_debug_fast_reaches_every_stage, test_cli_cfg_job_shows_debug_fast)


# ------------------------------------------------------------------------------------------------ defect 5
@pytest.mark.parametrize("script,args", [
    (cli_distill, ["ipc=0"]),
    (cli_distill, ["method=sre2l", "method.lr=1e30"]),
    (cli_evaluate, ["ipc=0"]),
    (cli_evaluate, ["distilled=/nonexistent/set"]),
    (cli_squeeze, ["teacher.checkpoint=/nonexistent/model.pt"]),
])
def test_refused_runs_leave_no_files(tiny, monkeypatch, capsys, script, args):
    tmp_path, ov = tiny
    out = tmp_path / "refused"
    code, errors, err = cli(script, [*with_out(ov, out), *args], monkeypatch, capsys)
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert not out.exists()  # no .hydra/, no empty <job>.log


# ------------------------------------------------------------------------------------------------ defect 6
def test_damaged_teacher_cache_entries_name_the_entry_and_the_way_out(tiny):
    tmp_path, ov = tiny
    cfg = compose_cfg("squeeze", ov)
    squeeze.run(cfg)
    entry = teacher_entry(cfg)
    meta = (entry / "meta.json").read_text()
    (entry / "meta.json").unlink()
    with pytest.raises(CheckpointError, match=rf"teacher cache entry {entry} is damaged \(meta.json is missing\); "
                                              r"pass teacher.force=true"):
        squeeze.run(cfg)
    (entry / "meta.json").write_text(meta)
    (entry / "model.pt").write_bytes((entry / "model.pt").read_bytes()[:100])  # truncated
    with pytest.raises(CheckpointError, match=r"is damaged \(.*truncated or corrupt\); pass teacher.force=true"):
        squeeze.run(cfg)
    fixed = squeeze.run(compose_cfg("squeeze", [*ov, "teacher.force=true"]))
    assert fixed["key"] == entry.name and squeeze.run(cfg)["test_acc"] == fixed["test_acc"]


# ------------------------------------------------------------------------------------------------ defect 7 (+ 9)
def test_refused_resume_costs_no_teacher_work_and_a_resumed_job_is_timed_from_its_own_start(tiny, monkeypatch):
    tmp_path, ov = tiny
    marker = tmp_path / "killed.marker"
    base = [*ov, "method=fadrm", *TINY_BN, f"+method.callbacks.kill={{_target_:helpers.KillAt,at_step:9,"
                                           f"marker:'{marker}'}}"]
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="killed"):
        distill.run(compose_cfg("distill", base))
    monkeypatch.setattr(teacher_cache, "get_teacher", no_work)
    monkeypatch.setattr(distill, "load_split", no_work)
    with pytest.raises(RetaError, match=r"resume: the checkpoints in .* were written by a different configuration "
                                        r"\(seed changed\)"):
        distill.run(compose_cfg("distill", [*base, "resume=true", "seed=1"]))
    monkeypatch.undo()
    done = load_distilled(distill.run(compose_cfg("distill", [*base, "resume=true"]))["distilled"])
    wall = time.perf_counter() - start
    per_job = done.meta["synthesis"]["seconds_per_job"]
    assert len(per_job) == 2 and all(0 < s < wall for s in per_job), per_job  # not the process uptime


# ------------------------------------------------------------------------------------------------ defect 8
def test_teacher_checkpoint_with_nan_weights_is_refused(tiny, tmp_path):
    _, ov = tiny
    model = squeeze.get_teacher(compose_cfg("squeeze", ov))[0]
    path = tmp_path / "nan.pt"
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                for k, v in model.state_dict().items()}, path)
    with pytest.raises(CheckpointError, match=r"holds NaN/inf weights in \d+ tensors"):
        squeeze.run(compose_cfg("squeeze", [*ov, f"teacher.checkpoint={path}"]))


# ------------------------------------------------------------------------------------------------ defect 9
def test_unpickling_errors_are_one_plain_line(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"w": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(Exception) as err:
        torch.load(tmp_path / "evil.pt", weights_only=True)
    text = load_failure(err.value)
    assert "pickled Python objects" in text and "system" in text and "weights_only" not in text
    assert "\x1b" not in load_failure(type(err.value)("\x1b[1mWeights only load failed\x1b[0m ..."))
    (tmp_path / "torn.pt").write_bytes((tmp_path / "evil.pt").read_bytes()[:40])
    with pytest.raises(Exception) as torn:
        torch.load(tmp_path / "torn.pt", weights_only=True)
    assert load_failure(torn.value) == "the file is truncated or corrupt"


@pytest.mark.parametrize("family", ["fadrm", "dm"])
def test_checkpoint_every_zero_means_never_and_negative_names_one_key(tiny, family):
    tmp_path, ov = tiny
    args = ["method=fadrm", *TINY_BN] if family == "fadrm" else TINY_DM
    with pytest.raises(RetaError) as err:
        distill.run(compose_cfg("distill", [*ov, *args, "method.checkpoint_every=-1"]))
    assert str(err.value) == "method.checkpoint_every must be an integer >= 0 (0 = never), got -1"
    distill.run(compose_cfg("distill", [*ov, *args, "method.checkpoint_every=0"]))
    assert not (tmp_path / "out" / "checkpoints" / "last.ckpt").exists()


def test_dm_nonfinite_loss_names_the_kept_checkpoint(tiny, monkeypatch):
    tmp_path, ov = tiny
    real = dm_matcher.DistributionMatcher.class_loss

    def nan_at_2(self, *args, **kwargs):
        loss, terms = real(self, *args, **kwargs)
        return (loss * float("nan"), terms) if self.iteration == 2 else (loss, terms)

    monkeypatch.setattr(dm_matcher.DistributionMatcher, "class_loss", nan_at_2)
    with pytest.raises(NonFiniteLossError, match=r"at iteration 2; last good checkpoint: .*last.ckpt"):
        distill.run(compose_cfg("distill", [*ov, *TINY_DM]))
    assert torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=True)["iteration"] == 2


def test_missing_data_hint_names_the_data_dir_in_use(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    cfg = compose_cfg(
        "squeeze", ["dataset=cifar10", f"paths.data_dir={elsewhere}", f"paths.output_dir={tmp_path / 'o'}"]
    )
    with pytest.raises(DatasetNotFoundError) as err:
        load_split(cfg.dataset, "train", cfg.paths.data_dir)
    assert f"put cifar-10-batches-py/ under {elsewhere}/cifar10/" in str(err.value)


def test_the_data_source_used_is_logged(tiny, caplog):
    tmp_path, ov = tiny
    cfg = compose_cfg("squeeze", ov)
    with caplog.at_level(logging.INFO, logger="reta.data.idx"):
        load_split(cfg.dataset, "train", cfg.paths.data_dir)
    assert any(str(tmp_path / "fmnist") in r.getMessage() for r in caplog.records)


def test_evaluate_refuses_a_missing_distilled_dir_before_loading_data(tiny, monkeypatch):
    _, ov = tiny
    monkeypatch.setattr(evaluate, "load_split", no_work)
    with pytest.raises(RetaError, match="distilled set not found"):
        evaluate.run(compose_cfg("evaluate", [*ov, "ipc=2", "distilled=/nonexistent/set"]))


# ------------------------------------------------------------------------------------------------ cases that hold
class Payload:
    """Unpickling this runs ``touch <marker>``: the marker file shows whether any code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payloads_are_refused_everywhere_and_never_run(tiny, monkeypatch):
    tmp_path, ov = tiny
    marker = tmp_path / "pwned"
    distill.run(compose_cfg("distill", [*ov, "method=random", "ipc=2"]))
    for name in ("images.pt", "labels.pt"):
        d = tmp_path / f"set_{name}"
        d.mkdir()
        for f in (tmp_path / "out" / "distilled").iterdir():
            if f.is_file():
                (d / f.name).write_bytes(f.read_bytes())
        torch.save({"x": Payload(marker)}, d / name)
        with pytest.raises(RetaError, match=rf"{name}: cannot load .*pickled Python objects"):
            load_distilled(d)
    evil = tmp_path / "evil.pt"
    torch.save({"w": Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        squeeze.run(compose_cfg("squeeze", [*with_out(ov, tmp_path / "sq"), f"teacher.checkpoint={evil}"]))
    # a resume checkpoint replaced by a payload
    marker_kill = tmp_path / "killed.marker"
    run = [*with_out(ov, tmp_path / "run"), "method=fadrm", *TINY_BN,
           f"+method.callbacks.kill={{_target_:helpers.KillAt,at_step:3,marker:'{marker_kill}'}}"]
    with pytest.raises(RuntimeError, match="killed"):
        distill.run(compose_cfg("distill", run))
    torch.save({"module": Payload(marker)}, tmp_path / "run" / "checkpoints" / "last.ckpt")
    with pytest.raises(CheckpointError, match="resume: cannot read .*pickled Python objects"):
        distill.run(compose_cfg("distill", [*run, "resume=true"]))
    assert not marker.exists()


def test_a_killed_squeeze_leaves_no_cache_entry(tiny, monkeypatch):
    from types import SimpleNamespace

    from reta.training import teacher as teacher_module

    tmp_path, ov = tiny
    real_write = teacher_cache.write_cache_entry

    def killed_mid_write(entry, model, meta, **kwargs):
        def die(*a, **k):
            raise KeyboardInterrupt

        monkeypatch.setattr(teacher_module, "json", SimpleNamespace(dumps=die))  # model.pt written, meta.json not yet
        real_write(entry, model, meta, **kwargs)

    monkeypatch.setattr(teacher_cache, "write_cache_entry", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        squeeze.run(compose_cfg("squeeze", ov))
    monkeypatch.undo()
    teachers = tmp_path / "cache" / "teachers"
    assert not teachers.exists() or list(teachers.iterdir()) == []

"""Reliability under preemption: SIGTERM (SLURM's preemption and time-limit signal) writes a resume checkpoint and
exits 143, a resume refuses changed settings first, and a requeued SLURM job resumes its run. The table in
docs/reliability.md names these tests."""

from __future__ import annotations

import logging
import os
import signal
import sys

import lightning as L
import pytest
import torch

from reta import distill
from reta.cli import distill as cli_distill
from reta.data.distilled import load_distilled
from reta.synthesis.frozen import module as frozen_module

from helpers import TINY_BN, TINY_SFM, cli, compose_cfg, tiny_fmnist, with_out


@pytest.fixture()
def tiny(tmp_path):
    return tmp_path, tiny_fmnist(tmp_path)


class SigtermAt(L.Callback):
    """Sends SIGTERM to this process during synthesis step ``at_step`` (what SLURM does on preemption)."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_synthesis_step(self, trainer, module, step) -> None:
        if step.global_step == self.at_step:
            os.kill(os.getpid(), signal.SIGTERM)


# ------------------------------------------------------------------------------------------------ defect 2
def test_sigterm_during_fadrm_writes_a_resume_checkpoint_and_exits_143(tiny, monkeypatch, capsys):
    tmp_path, ov = tiny
    base = [*ov, "method=fadrm", *TINY_BN, "method.checkpoint_every=0"]  # no periodic checkpoint: the signal writes it
    ref = load_distilled(distill.run(compose_cfg("distill", with_out(base, tmp_path / "ref")))["distilled"])
    run = with_out(base, tmp_path / "run")
    term = "+method.callbacks.term={_target_:test_preemption.SigtermAt,at_step:4}"
    code, errors, _ = cli(cli_distill, [*run, term], monkeypatch, capsys)
    assert code == 143 and len(errors) == 1 and "SIGTERM" in errors[0] and "resume=true" in errors[0]
    assert not (tmp_path / "run" / "distilled").exists()
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert str(ckpt) in errors[0]
    assert torch.load(ckpt, weights_only=True)["module"]["next_step"] == 5  # the step the signal arrived in finished
    resumed = distill.run(compose_cfg("distill", [*run, term, "resume=true"]))  # step 4 is behind it
    assert torch.equal(load_distilled(resumed["distilled"]).images, ref.images)


def _sfm_reference(tiny, checkpoint_every: int):
    """(tmp_path, the tiny SFM overrides, the uninterrupted run's set, the real training_step) for a preemption test."""
    tmp_path, ov = tiny
    base = [*ov, *TINY_SFM, f"method.checkpoint_every={checkpoint_every}"]
    ref = load_distilled(distill.run(compose_cfg("distill", with_out(base, tmp_path / "ref")))["distilled"])
    return tmp_path, base, ref, frozen_module.FrozenSynthesisModule.training_step


def test_sigterm_during_sfm_writes_a_resume_checkpoint_and_exits_143(tiny, monkeypatch, capsys):
    tmp_path, base, ref, real_step = _sfm_reference(tiny, checkpoint_every=0)

    def term_at_1(self, batch, batch_idx):
        if self.step_index == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, batch, batch_idx)

    run = with_out(base, tmp_path / "run")
    monkeypatch.setattr(frozen_module.FrozenSynthesisModule, "training_step", term_at_1)
    code, errors, _ = cli(cli_distill, run, monkeypatch, capsys)
    monkeypatch.setattr(frozen_module.FrozenSynthesisModule, "training_step", real_step)
    assert code == 143 and len(errors) == 1 and "resume=true" in errors[0]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file() and not (tmp_path / "run" / "distilled").exists()
    resumed = load_distilled(distill.run(compose_cfg("distill", [*run, "resume=true"]))["distilled"])
    assert resumed.meta["resumed_from_step"] == 2
    assert torch.equal(resumed.images, ref.images)


@pytest.mark.slow
def test_sigterm_from_outside_ends_a_cli_run_with_143_and_one_line(tiny):
    import subprocess
    import time
    from pathlib import Path

    tmp_path, ov = tiny
    exe = Path(sys.executable).parent / "reta-distill"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    args = [*ov, "method=sfm", "ipc=1", "method.iterations=100000", "method.extent_every=0", "method.log_every=1000",
            "method.checkpoint_every=1"]
    proc = subprocess.Popen([str(exe), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    ckpt = tmp_path / "out" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not ckpt.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ckpt.is_file(), "synthesis never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 143 and len(errors) == 1 and "resume=true" in errors[0] and str(ckpt) in errors[0]
    assert not (tmp_path / "out" / "distilled").exists()
    assert torch.load(ckpt, weights_only=True)["step"] >= 1



# ------------------------------------------------------------------------------------------------ defect 14
def test_a_resume_with_another_backbone_is_refused_first_naming_what_changed(tiny, monkeypatch):
    from reta.errors import RetaError

    tmp_path, ov = tiny
    real_step = frozen_module.FrozenSynthesisModule.training_step

    def crash_at_2(self, batch, batch_idx):
        if self.step_index == 2:
            raise RuntimeError("killed")
        return real_step(self, batch, batch_idx)

    base = [*ov, *TINY_SFM, "method.checkpoint_every=1"]
    monkeypatch.setattr(frozen_module.FrozenSynthesisModule, "training_step", crash_at_2)
    with pytest.raises(RuntimeError, match="killed"):
        distill.run(compose_cfg("distill", base))
    monkeypatch.setattr(frozen_module.FrozenSynthesisModule, "training_step", real_step)

    def no_work(*a, **k):
        raise AssertionError("data, teacher or statistics work before the resume was refused")

    monkeypatch.setattr(distill, "load_split", no_work)
    with pytest.raises(RetaError, match=r"different configuration \(backbone changed\): backbone.seed: 0 → 1;"):
        distill.run(compose_cfg("distill", [*base, "resume=true", "backbone.seed=1"]))
    with pytest.raises(RetaError, match=r"\(backbone changed\): .*backbone.name: \"random\" → \"teacher\""):
        distill.run(compose_cfg("distill", [*[o for o in base if not o.startswith("backbone")], "resume=true",
                                            "backbone=teacher"]))
    monkeypatch.undo()
    resumed = load_distilled(distill.run(compose_cfg("distill", [*base, "resume=true"]))["distilled"])
    assert resumed.meta["resumed_from_step"] == 2



def test_a_requeued_slurm_job_resumes_its_run_without_resume_true(tiny, monkeypatch):
    from reta.errors import RetaError

    tmp_path, base, ref, real_step = _sfm_reference(tiny, checkpoint_every=1)

    def crash_at_2(self, batch, batch_idx):
        if self.step_index == 2:
            raise RuntimeError("preempted")
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(frozen_module.FrozenSynthesisModule, "training_step", crash_at_2)
    with pytest.raises(RuntimeError, match="preempted"):
        distill.run(compose_cfg("distill", base))
    monkeypatch.setattr(frozen_module.FrozenSynthesisModule, "training_step", real_step)
    with pytest.raises(RetaError, match="interrupted run"):  # a plain rerun still needs resume=true
        distill.run(compose_cfg("distill", base))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # what SLURM sets in a requeued job
    with pytest.raises(RetaError, match=r"\(seed changed\)"):  # the run record is still checked
        distill.run(compose_cfg("distill", [*base, "seed=1"]))
    resumed = load_distilled(distill.run(compose_cfg("distill", base))["distilled"])
    assert resumed.meta["resumed_from_step"] == 2 and torch.equal(resumed.images, ref.images)


TINY_DM = ["method=dm", "ipc=1", "method.iterations=4", "method.batch_real=4", "method.embedder.kwargs.depth=2",
           "method.embedder.kwargs.width=8", "method.log_every=1"]


@pytest.mark.parametrize("family", ["bn", "dm", "frozen"])
def test_a_resumed_run_reports_the_synthesis_seconds_of_every_part(tiny, monkeypatch, capsys, family):
    import time

    from reta.synthesis import matcher_module
    from reta.synthesis.bn import module as bn_module

    tmp_path, ov = tiny
    method, cls = {"bn": ([*TINY_BN, "method=fadrm"], bn_module.SynthesisModule),
                   "dm": (TINY_DM, matcher_module.MatcherModule),
                   "frozen": (TINY_SFM, frozen_module.FrozenSynthesisModule)}[family]
    run = with_out([*ov, *method, "method.checkpoint_every=0"], tmp_path / "run")
    real_step, calls = cls.training_step, []

    def term_at_2(self, batch, batch_idx):
        calls.append(batch_idx)
        if len(calls) == 2:
            time.sleep(0.3)  # pre-kill synthesis time that the resumed run must still count
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(cls, "training_step", term_at_2)
    code, errors, err = cli(cli_distill, run, monkeypatch, capsys)
    monkeypatch.setattr(cls, "training_step", real_step)
    assert code == 143 and len(errors) == 1, err[-2000:]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    before = state["synthesis_seconds"]
    assert before >= 0.3  # the checkpoint written on the signal carries the seconds spent so far
    state["synthesis_seconds"] = before + 1000.0  # a long pre-kill part, to see it added to the resumed run's time
    torch.save(state, ckpt)
    t0 = time.perf_counter()
    resumed = load_distilled(distill.run(compose_cfg("distill", [*run, "resume=true"]))["distilled"])
    after = time.perf_counter() - t0
    assert before + 1000.0 <= resumed.meta["synthesis_seconds"] <= before + 1000.0 + after + 0.01


@pytest.mark.parametrize("family", ["bn", "dm", "frozen"])
def test_sigusr1_writes_a_resume_checkpoint_and_the_run_goes_on(tiny, monkeypatch, caplog, family):
    from reta.synthesis import matcher_module
    from reta.synthesis.bn import module as bn_module

    tmp_path, ov = tiny
    method, cls, position = {"bn": ([*TINY_BN, "method=fadrm"], bn_module.SynthesisModule, ("module", "next_step")),
                             "dm": (TINY_DM, matcher_module.MatcherModule, ("iteration",)),
                             "frozen": (TINY_SFM, frozen_module.FrozenSynthesisModule, ("step",))}[family]
    base = [*ov, *method, "method.checkpoint_every=0"]  # no periodic checkpoint: only the signal writes one
    ref = load_distilled(distill.run(compose_cfg("distill", with_out(base, tmp_path / "ref")))["distilled"])
    real_step, calls, received = cls.training_step, [], []

    def usr1_at_2(crash_at):
        def step(self, batch, batch_idx):
            calls.append(batch_idx)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGUSR1)
            if len(calls) == crash_at:
                raise RuntimeError("killed")
            return real_step(self, batch, batch_idx)
        return step

    def earlier_handler(signum, frame):  # stands for Lightning's SLURM requeue handler: it still runs
        received.append(signum)

    original = signal.signal(signal.SIGUSR1, earlier_handler)
    try:
        monkeypatch.setattr(cls, "training_step", usr1_at_2(crash_at=0))
        with caplog.at_level(logging.WARNING):
            went_on = load_distilled(distill.run(compose_cfg("distill", with_out(base, tmp_path / "on")))["distilled"])
        assert received == [signal.SIGUSR1] and signal.getsignal(signal.SIGUSR1) is earlier_handler
        assert f"SIGUSR1: resume checkpoint written to {tmp_path / 'on' / 'checkpoints' / 'last.ckpt'}" in caplog.text
        assert torch.equal(went_on.images, ref.images)  # the run went on to the uninterrupted images

        calls.clear()
        monkeypatch.setattr(cls, "training_step", usr1_at_2(crash_at=4))
        run = with_out(base, tmp_path / "run")
        with pytest.raises(RuntimeError, match="killed"):  # e.g. SIGKILL before the step SIGTERM waits for ends
            distill.run(compose_cfg("distill", run))
    finally:
        signal.signal(signal.SIGUSR1, original)
    monkeypatch.setattr(cls, "training_step", real_step)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    for key in position:
        state = state[key]
    assert state == 2  # written at the boundary of the step the signal arrived in
    resumed = load_distilled(distill.run(compose_cfg("distill", [*run, "resume=true"]))["distilled"])
    assert torch.equal(resumed.images, ref.images)

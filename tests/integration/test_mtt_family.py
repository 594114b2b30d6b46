"""MTT end to end on a tiny IDX fixture: the expert buffer is built once and found by its key (reta-experts and
reta-distill share it), distillation writes a set, resume after a kill reproduces a straight run."""

from __future__ import annotations

import json

import pytest
import torch

from reta import distill, experts
from reta.cli import distill as cli_distill
from reta.cli import experts as cli_experts
from reta.data.distilled import load_distilled
from reta.synthesis.process import trajectory
from reta.training import experts as expert_cache

from fixtures import write_idx_dataset
from helpers import cli, compose_cfg, tiny_overrides

SMALL = ["method.iterations=3", "method.syn_steps=3", "method.max_start_epoch=2", "method.expert_epochs=1",
         "method.net.kwargs.depth=2", "method.net.kwargs.width=8", "method.experts.num_experts=2",
         "method.experts.epochs=2", "method.experts.batch_size=32", "method.lr_img=10", "method.log_every=1",
         "method.checkpoint_every=1", "~method.per_ipc"]


@pytest.fixture()
def tiny(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=20, classes=10, gz=False)
    return tmp_path, tiny_overrides(tmp_path, root)


def test_expert_buffer_is_built_once_and_found_by_its_key(tiny, monkeypatch):
    tmp_path, ov = tiny
    built = []
    real_build = expert_cache.build_experts
    monkeypatch.setattr(expert_cache, "build_experts", lambda *a, **k: built.append(a[0]) or real_build(*a, **k))
    meta = experts.run(compose_cfg("experts", [*ov, *SMALL, f"paths.output_dir={tmp_path / 'e'}"]))
    (entry,) = (tmp_path / "cache" / "experts").iterdir()
    assert built == [entry] and meta["entry"] == entry.name
    assert meta["snapshots"] == 3 and meta["recipe"]["num_experts"] == 2 and len(meta["test_acc"]) == 2
    traj = torch.load(entry / "expert_0.pt", weights_only=True)["params"]
    assert traj.shape == (3, meta["num_params"]) and not torch.equal(traj[0], traj[-1])
    assert json.loads((tmp_path / "e" / "experts.json").read_text())["entry"] == entry.name
    mtime = (entry / "expert_0.pt").stat().st_mtime_ns
    res = distill.run(compose_cfg("distill", [*ov, "method=mtt", "ipc=2", *SMALL]))
    assert built == [entry], "the expert buffer was rebuilt"
    assert (entry / "expert_0.pt").stat().st_mtime_ns == mtime
    ds = load_distilled(res["distilled"])
    m = ds.meta
    assert ds.images.shape == (20, 1, 28, 28) and m["experts"]["key"] == entry.name
    assert [r["iteration"] for r in m["loss_history"]] == [1, 2, 3] and m["syn_lr"] > 0
    other = experts.run(compose_cfg("experts", [*ov, *SMALL, "method.experts.lr=0.02",
                                                f"paths.output_dir={tmp_path / 'e2'}"]))
    assert other["entry"] != entry.name and len(built) == 2


def test_a_killed_expert_build_continues_with_the_missing_experts(tiny, monkeypatch):
    tmp_path, ov = tiny
    cfg = compose_cfg("experts", [*ov, *SMALL, "method.experts.num_experts=3", f"paths.output_dir={tmp_path / 'e'}"])
    trained = []
    real_train = expert_cache.train_expert

    def killed_at_2(i, *args, **kwargs):
        if i == 2 and not trained.count("killed"):
            trained.append("killed")
            raise RuntimeError("killed")
        trained.append(i)
        return real_train(i, *args, **kwargs)

    monkeypatch.setattr(expert_cache, "train_expert", killed_at_2)
    with pytest.raises(RuntimeError, match="killed"):
        experts.run(cfg)
    assert not [p for p in (tmp_path / "cache" / "experts").iterdir() if not p.name.startswith(".")]
    meta = experts.run(cfg)
    assert trained == [0, 1, "killed", 2], "finished experts were retrained"
    assert meta["experts_from_an_earlier_build"] == 2 and len(meta["test_acc"]) == 3
    (entry,) = (tmp_path / "cache" / "experts").iterdir()  # the partial folder is gone
    monkeypatch.setattr(expert_cache, "train_expert", real_train)
    straight = compose_cfg("experts", [*ov, *SMALL, "method.experts.num_experts=3",
                                       f"paths.cache_dir={tmp_path / 'c2'}", f"paths.output_dir={tmp_path / 'e2'}"])
    experts.run(straight)
    for i in range(3):
        a = torch.load(entry / f"expert_{i}.pt", weights_only=True)["params"]
        b = torch.load(tmp_path / "c2" / "experts" / entry.name / f"expert_{i}.pt", weights_only=True)["params"]
        assert torch.equal(a, b), f"expert {i} of the resumed build differs from a straight build"


def test_mtt_resume_after_a_kill_gives_the_same_images(tiny, monkeypatch):
    tmp_path, ov = tiny
    args = ["method=mtt", "ipc=1", *SMALL, "method.iterations=4", "method.checkpoint_every=2"]
    straight = load_distilled(distill.run(compose_cfg("distill", [*ov, *args,
                                                                  f"paths.output_dir={tmp_path / 'a'}"]))["distilled"])
    real_step = trajectory.TrajectoryMatcher.step

    def crash_at_3(self):
        if self.iteration == 3:
            raise RuntimeError("killed")
        return real_step(self)

    out_b = f"paths.output_dir={tmp_path / 'b'}"
    monkeypatch.setattr(trajectory.TrajectoryMatcher, "step", crash_at_3)
    with pytest.raises(RuntimeError, match="killed"):
        distill.run(compose_cfg("distill", [*ov, *args, out_b]))
    assert (tmp_path / "b" / "checkpoints" / "last.ckpt").is_file()
    monkeypatch.setattr(trajectory.TrajectoryMatcher, "step", real_step)
    # snapshots asked for on resume: iteration 2, where the run resumes, is written at the start, 3 on the way
    resumed = load_distilled(distill.run(compose_cfg("distill", [*ov, *args, out_b, "resume=true",
                                                                 "snapshots=[2,3]"]))["distilled"])
    assert resumed.meta["resumed_from_iteration"] == 2
    assert torch.equal(resumed.images, straight.images)
    assert resumed.meta["syn_lr"] == straight.meta["syn_lr"]
    stopped = load_distilled(distill.run(compose_cfg("distill", [*ov, *args, "method.iterations=3",
                                                                 f"paths.output_dir={tmp_path / 'c'}"]))["distilled"])
    for n in (2, 3):
        snap = load_distilled(tmp_path / "b" / "snapshots" / f"it{n}" / "distilled")
        assert snap.meta["iterations"] == n and snap.meta["syn_lr"] > 0
    snap3 = load_distilled(tmp_path / "b" / "snapshots" / "it3" / "distilled")
    assert torch.equal(snap3.images, stopped.images) and snap3.meta["syn_lr"] == stopped.meta["syn_lr"], \
        "a snapshot's students train at the lr learnt by then"


@pytest.mark.parametrize(("arg", "line"), [
    ("+method.experts.num_expert=3", "error: method.experts: unknown key"),
    ("method.experts.epochs=2", "error: method.experts.epochs=2 is too short"),  # IPC 1: T+ 2, M 2 need 3
])
def test_bad_mtt_keys_one_line_exit_2(tmp_path, monkeypatch, capsys, arg, line):
    out = tmp_path / "out"
    code, errors, err = cli(cli_distill, ["method=mtt", "ipc=1", arg, f"paths.output_dir={out}", "logger=none"],
                            monkeypatch, capsys, cwd=tmp_path)
    assert code == 2, err[-2000:]
    (error,) = errors
    assert error.startswith(line), error
    assert not (out / "distilled").exists() and not (tmp_path / "cache").exists()


def test_reta_experts_bad_key_one_line_exit_2_writes_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    code, errors, err = cli(cli_experts, ["method.experts.batch_size=0", f"paths.output_dir={out}",
                                          f"paths.cache_dir={tmp_path / 'cache'}", "logger=none"],
                            monkeypatch, capsys, cwd=tmp_path)
    assert code == 2, err[-2000:]
    assert errors == ["error: method.experts: num_experts, epochs, batch_size must be >= 1 and lr > 0"]
    assert not out.exists() and not (tmp_path / "cache").exists()

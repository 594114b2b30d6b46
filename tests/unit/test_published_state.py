"""experiments/published/save_state.sh and run.sh's STATE: a cell's resume state outlives the machine it ran on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "experiments" / "published"


def _cell(out: Path, name: str, *, ckpt: bytes | None = None, finished: bool = False, snapshot: bool = False):
    d = out / name
    (d / "checkpoints").mkdir(parents=True)
    (d / "checkpoints" / "run.json").write_text('{"key": {"ipc": 1}}')
    (d / "checkpoints" / "last.ckpt").write_bytes(ckpt or b"")
    if snapshot:
        (d / "snapshots" / "it5" / "distilled").mkdir(parents=True)
        (d / "snapshots" / "it5" / "distilled" / "meta.json").write_text('{"iterations": 5}')
    if finished:
        (d / "distilled").mkdir()
        (d / "distilled" / "meta.json").write_text("{}")
    return d


def test_saved_state_is_complete_checkpoints_only_and_run_sh_continues_from_it(tmp_path):
    """save_state.sh copies an unfinished cell's checkpoint, run.json and snapshots; skips a checkpoint that is not a
    complete archive (mid-write); removes the saved state of a finished cell. run.sh then restores a cell into an
    output folder that has no checkpoint for it, and with EVAL_ONLY=1 distils nothing."""
    torch.save({"iteration": 7, "images": torch.arange(6.0)}, tmp_path / "good.ckpt")
    good = (tmp_path / "good.ckpt").read_bytes()
    out, state = tmp_path / "out", tmp_path / "state"
    _cell(out, "dsa_ipc1", ckpt=good, snapshot=True)
    _cell(out, "dc_ipc1", ckpt=good[: len(good) // 2])
    (_cell(out, "dm_ipc1", ckpt=good, finished=True) / "checkpoints" / "last.ckpt").unlink()  # as a finished run
    (state / "dm_ipc1" / "checkpoints").mkdir(parents=True)
    env = {**os.environ, "STATE": str(state), "BIN": str(Path(sys.executable).parent)}
    r = subprocess.run(["bash", str(SCRIPTS / "save_state.sh"), str(out)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (state / "dsa_ipc1" / "checkpoints" / "last.ckpt").read_bytes() == good
    assert (state / "dsa_ipc1" / "snapshots" / "it5" / "distilled" / "meta.json").is_file()
    assert not (state / "dc_ipc1").exists() and "dc_ipc1: checkpoint is being written" in r.stdout
    assert not (state / "dm_ipc1").exists()
    assert sorted(p.name for p in state.iterdir()) == ["dsa_ipc1"]  # no temporary folders left

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "reta-distill").write_text(f"#!/bin/bash\ntouch {tmp_path}/distilled_called\n")
    (fake / "reta-distill").chmod(0o755)
    out2 = tmp_path / "out2"
    env = {**os.environ, "STATE": str(state), "BIN": str(fake), "CELLS": "dsa_ipc1 dc_ipc1", "EVAL_ONLY": "1"}
    r = subprocess.run(["bash", str(SCRIPTS / "run.sh"), str(out2)], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (out2 / "dsa_ipc1" / "checkpoints" / "last.ckpt").read_bytes() == good
    assert (out2 / "dsa_ipc1" / "snapshots" / "it5" / "distilled" / "meta.json").is_file()
    assert not (out2 / "dc_ipc1").exists()
    assert not (tmp_path / "distilled_called").exists()
    assert "dsa_ipc1: evaluate the sets that exist" in r.stdout and "distil (" not in r.stdout


def test_an_expert_buffer_in_progress_is_saved_without_temporaries_and_restored_into_a_cell_without_cache(tmp_path):
    """An MTT cell still building its expert buffer has no checkpoint: save_state.sh keeps its finished experts (and a
    finished buffer) but not a writer's temporary files; run.sh restores them into a cell with no cache, points the
    distillation at the cell's own cache, and leaves a cell that has a cache of its own as it is."""
    out, state = tmp_path / "out", tmp_path / "state"
    partial = out / "mtt_ipc1" / "cache" / "experts" / ".fashion_mnist_convnet_abc.partial"
    partial.mkdir(parents=True)
    torch.save({"params": torch.ones(4, 3), "test_acc": 0.5}, partial / "expert_0.pt")
    (partial / ".expert_1.pt.0123456789ab.tmp").write_bytes(b"half")
    (partial.parent / ".fashion_mnist_convnet_abc.tmp-0123456789ab").mkdir()
    env = {**os.environ, "STATE": str(state), "BIN": str(Path(sys.executable).parent)}
    r = subprocess.run(["bash", str(SCRIPTS / "save_state.sh"), str(out)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    saved = state / "mtt_ipc1" / "cache" / "experts"
    assert sorted(str(p.relative_to(saved)) for p in saved.rglob("*")) == [
        ".fashion_mnist_convnet_abc.partial", ".fashion_mnist_convnet_abc.partial/expert_0.pt"]
    assert not (state / "mtt_ipc1" / "checkpoints").exists()

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "reta-distill").write_text(f'#!/bin/bash\necho "$@" >> {tmp_path}/distill_args\n')
    (fake / "reta-distill").chmod(0o755)
    out2 = tmp_path / "out2"
    (out2 / "mtt_ipc10" / "cache").mkdir(parents=True)  # a cache of its own: nothing restored over it
    (state / "mtt_ipc10" / "cache" / "experts").mkdir(parents=True)
    (state / "mtt_ipc10" / "cache" / "experts" / "stale").write_text("x")
    env = {**os.environ, "STATE": str(state), "BIN": str(fake), "CELLS": "mtt_ipc1 mtt_ipc10"}
    r = subprocess.run(["bash", str(SCRIPTS / "run.sh"), str(out2)], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    restored = out2 / "mtt_ipc1" / "cache" / "experts" / ".fashion_mnist_convnet_abc.partial" / "expert_0.pt"
    assert torch.equal(torch.load(restored, weights_only=True)["params"], torch.ones(4, 3))
    assert not (out2 / "mtt_ipc1" / "checkpoints").exists()
    assert not (out2 / "mtt_ipc10" / "cache" / "experts").exists()
    args = (tmp_path / "distill_args").read_text().splitlines()
    cache = [a for a in args[0].split() if a.startswith("paths.cache_dir=")]
    assert cache == [f"paths.cache_dir={out2}/mtt_ipc1/cache"]


def test_the_random_subset_students_are_saved_and_restored_for_the_evaluations(tmp_path):
    """save_state.sh keeps the evaluations' cached random-subset students (OUT/eval_cache/random_students) in
    STATE/random_students; run.sh restores those the output folder lacks, keeps the ones it has, and evaluates with
    paths.cache_dir=OUT/eval_cache, so a new machine reads them instead of training them again."""
    out, state = tmp_path / "out", tmp_path / "state"
    (out / "eval_cache" / "random_students").mkdir(parents=True)
    for name in ("fashion_mnist_aaa", "fashion_mnist_bbb"):
        (out / "eval_cache" / "random_students" / f"{name}.json").write_text(f'{{"key": "{name}", "result": {{}}}}')
    env = {**os.environ, "STATE": str(state), "BIN": str(Path(sys.executable).parent)}
    r = subprocess.run(["bash", str(SCRIPTS / "save_state.sh"), str(out)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    saved = state / "random_students"
    assert sorted(p.name for p in saved.iterdir()) == ["fashion_mnist_aaa.json", "fashion_mnist_bbb.json"]

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "reta-evaluate").write_text(f'#!/bin/bash\necho "$@" >> {tmp_path}/eval_args\nexit 1\n')
    (fake / "reta-evaluate").chmod(0o755)
    out2 = tmp_path / "out2"
    (out2 / "dsa_ipc1" / "snapshots" / "it5" / "distilled").mkdir(parents=True)
    (out2 / "dsa_ipc1" / "snapshots" / "it5" / "distilled" / "meta.json").write_text("{}")
    (out2 / "eval_cache" / "random_students").mkdir(parents=True)
    (out2 / "eval_cache" / "random_students" / "fashion_mnist_aaa.json").write_text("this machine's")
    env = {**os.environ, "STATE": str(state), "BIN": str(fake), "CELLS": "dsa_ipc1", "SNAPSHOTS": "5",
           "EVAL_ONLY": "1", "EXTRA": f"paths.cache_dir={tmp_path}/elsewhere"}
    r = subprocess.run(["bash", str(SCRIPTS / "run.sh"), str(out2)], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAILED evaluate dsa_ipc1 snapshot 5" in r.stdout  # the fake evaluation ran (and failed, as it should)
    cache = out2 / "eval_cache" / "random_students"
    assert (cache / "fashion_mnist_aaa.json").read_text() == "this machine's"
    assert (cache / "fashion_mnist_bbb.json").read_text() == (saved / "fashion_mnist_bbb.json").read_text()
    args = (tmp_path / "eval_args").read_text().split()
    assert [a for a in args if a.startswith("paths.cache_dir=")][-1] == f"paths.cache_dir={out2}/eval_cache"

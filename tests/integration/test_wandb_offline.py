"""logger=wandb runs offline without an API key and writes a local run with the logged metrics."""

from __future__ import annotations

import time

import pytest

from reta import squeeze
from reta.cli.common import finish_wandb

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides

pytestmark = pytest.mark.slow  # W&B offline runs (a wandb service process per run)


def wait_for(run_dir, needles: list[bytes], seconds: float = 60.0) -> bytes:
    """The run's transaction log once every needle is in it (or the deadline passed): W&B flushes asynchronously."""
    deadline = time.monotonic() + seconds
    while True:
        blob = b"".join(p.read_bytes() for p in run_dir.rglob("*.wandb"))
        if all(n in blob for n in needles) or time.monotonic() > deadline:
            return blob
        time.sleep(0.5)


def test_wandb_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc → offline
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    ov = [o for o in tiny_overrides(tmp_path, root) if not o.startswith("logger=")] + ["logger=wandb"]
    try:
        squeeze.run(compose_cfg("squeeze", ov))
    finally:
        finish_wandb()
    runs = list((tmp_path / "out").rglob("offline-run-*"))
    assert runs, "no offline W&B run written under the run dir"
    files = list(runs[0].rglob("*.wandb"))
    assert files and files[0].stat().st_size > 0
    blob = wait_for(runs[0], [b"train/loss", b"train/acc"])
    assert b"train/loss" in blob and b"train/acc" in blob


def test_wandb_distill_logs_stage_grids_and_the_set_as_a_dataset_artifact(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from reta import distill

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path))
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    ov = [o for o in tiny_overrides(tmp_path, root) if not o.startswith("logger=")] + ["logger=wandb"]
    tiny = ["ipc=2", "method=fadrm", "method.stages.sizes=[28,28]", "method.stages.budgets=[2,2]", "method.init.mipc=6",
            "method.init.num_crop=2", "method.log_every=1", "logger.stage_images.slots=[1]"]
    try:
        result = distill.run(compose_cfg("distill", [*ov, *tiny]))
    finally:
        finish_wandb()
    assert result["wandb_artifact"] == "distilled-fashion_mnist-fadrm-ipc2-seed0"
    runs = list((tmp_path / "out").rglob("offline-run-*"))
    assert runs
    media = sorted(p.name for p in runs[0].rglob("*.png") if "stages" in p.parts)
    assert len(media) == 2, media  # slot 1 only (jobs = 2 slots × 1 chunk), one grid per stage
    blob = wait_for(runs[0], [b"stages/slot1", b"distilled-fashion_mnist-fadrm-ipc2-seed0", b"loss/bn"])
    assert b"stages/slot1" in blob and b"stages/slot0" not in blob
    assert b"distilled-fashion_mnist-fadrm-ipc2-seed0" in blob and b"loss/bn" in blob

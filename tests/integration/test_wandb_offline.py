"""logger=wandb runs offline without an API key and writes a local run with the logged metrics."""

from __future__ import annotations

import time

import pytest

from reta import squeeze
from reta.cli.common import finish_wandb

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides


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
    deadline = time.monotonic() + 60  # the W&B service flushes its transaction log asynchronously
    blob = files[0].read_bytes()
    while b"train/acc" not in blob and time.monotonic() < deadline:
        time.sleep(0.5)
        blob = files[0].read_bytes()
    assert b"train/loss" in blob and b"train/acc" in blob

"""Multirun launchers: a two-job sweep through submitit's local executor (the SLURM code path, run locally)."""

from __future__ import annotations

import json

import pytest

from fixtures import write_idx_dataset
from helpers import run_cli

pytestmark = pytest.mark.slow  # a submitit sweep of console-script jobs, ~45 s


def test_submitit_local_two_job_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=20, classes=10, gz=True)
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "reta-squeeze",
        ["-m", "hydra/launcher=local", f"hydra.sweep.dir={sweep}", f"dataset.root={root}", "model=convnet_tiny",
         "recipe.epochs=1", "seed=0,1", f"paths.cache_dir={tmp_path / 'cache'}", "progress_bar=false", "logger=none",
         "num_threads=1"],
        tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metas = [json.loads((sweep / str(j) / "teacher.json").read_text()) for j in (0, 1)]
    assert [m["seed"] for m in metas] == [0, 1]
    assert metas[0]["key"] != metas[1]["key"]
    assert list((sweep / ".submitit").iterdir()), "submitit wrote no job folders"

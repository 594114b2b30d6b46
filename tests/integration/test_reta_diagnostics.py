"""Topology diagnostics (reta-report topology.run_dir=…) on a finished tiny RETA run: PNGs + JSON, from Python and
through the report stage on the saved Hydra config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from reta import distill, report
from reta.errors import RetaError
from reta.report import topology_diagnostics
from reta.reporting.topology_plots import betti_curve

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides

TINY = ["method=reta", "ipc=4", "method.stages.sizes=[28,28]", "method.stages.budgets=[2,2]", "method.init.mipc=6",
        "method.init.num_crop=1", "method.teachers=null", "method.callbacks.pta.k=3", "method.callbacks.pta.grid=8",
        "method.callbacks.pta.num_subsets=4"]


def test_betti_curve_counts_alive_bars_with_multiplicity():
    bars = (torch.tensor([0.0, 0.0, 0.5]), torch.tensor([1.0, float("inf"), 0.7]), torch.tensor([0.5, 1.0, 2.0]))
    assert betti_curve(bars, np.array([0.0, 0.6, 0.8, 2.0])).tolist() == [1.5, 3.5, 1.5, 1.0]


def test_diagnostics_on_a_finished_run_from_python_and_cli(tmp_path, capsys):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    cfg = compose_cfg("distill", [*tiny_overrides(tmp_path, root), *TINY])
    distill.run(cfg)
    run = tmp_path / "out"
    res = topology_diagnostics(run, cfg, classes=[0, 3])
    out = run / "diagnostics" / "topology"
    assert sorted(p.name for p in out.glob("*.png")) == ["betti_summary.png", "class_000_t-shirt_top.png",
                                                           "class_003_dress.png"]
    saved = json.loads((out / "topology.json").read_text())
    assert saved["ipc"] == 4 and set(saved["classes"]) == {"0", "3"} and saved["topology"]["k"] == 3
    c0 = saved["classes"]["0"]
    assert c0["n_syn"] == 4 and c0["n_real_pool"] == 6 and c0["kappa"] > 0 and c0["pta_loss"] >= 0
    assert c0["bars"]["syn"]["h0"] == 3.0  # 4 points, one global component dropped: 3 finite H0 bars
    assert res["mean_pta_loss"] == saved["mean_pta_loss"]
    # CLI on the saved Hydra config (what reta-distill leaves in the run dir)
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    rcfg = compose_cfg("report", [f"paths.output_dir={tmp_path / 'rep'}", f"topology.run_dir={run / 'distilled'}",
                                  "topology.classes=[1]", f"topology.out_dir={tmp_path / 'diag'}"])
    report.run(rcfg)
    assert (tmp_path / "diag" / "class_001_trouser.png").is_file()
    assert "topology diagnostics" in capsys.readouterr().out
    with pytest.raises(RetaError, match="neither a run dir"):
        report.run(compose_cfg("report", [f"paths.output_dir={tmp_path / 'rep'}", f"topology.run_dir={tmp_path}"]))

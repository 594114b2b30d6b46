"""reta-report aggregation: cells merge seeds across runs; Markdown/CSV carry mean ± std."""

from __future__ import annotations

import json

import pytest

from reta.errors import RetaError
from reta.reporting.tables import collect, find_metrics, to_csv, to_markdown


def _metrics(path, ipc, method, rand, dist=None, seeds=None):
    sets = {"random": {"acc_last": rand, "acc_best": [a + 0.01 for a in rand], "seconds": [1.0] * len(rand)}}
    if dist is not None:
        sets["distilled"] = {"acc_last": dist, "acc_best": dist}
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"dataset": "fashion_mnist", "ipc": ipc, "protocol": "kd",
                                                   "student": "convnet", "method": method, "sets": sets,
                                                   "seeds": seeds or list(range(len(rand)))}))


def test_collect_merges_and_formats(tmp_path):
    _metrics(tmp_path / "a", 10, "fadrm", [0.80, 0.82], [0.84, 0.86])
    _metrics(tmp_path / "b", 10, "random", [0.84], seeds=[2])
    _metrics(tmp_path / "d", 10, "reta", [0.80, 0.82], [0.9, 0.9])  # same seeds 0, 1: random counted once
    _metrics(tmp_path / "c", 1, "fadrm", [0.5], [0.6])
    cells = collect(find_metrics([tmp_path]))
    by = {(c.method, c.ipc): c for c in cells}
    assert by[("random", 10)].acc_last == [0.80, 0.82, 0.84]
    mean, std = by[("random", 10)].mean_std()
    assert mean == pytest.approx(82.0) and std == pytest.approx(1.632993, rel=1e-5)
    assert by[("fadrm", 10)].mean_std()[0] == pytest.approx(85.0)
    md = to_markdown(cells)
    assert "| random | 50.00 ± 0.00 (n=1) | 82.00 ± 1.63 (n=3) |" in md
    assert "| fadrm | 60.00 ± 0.00 (n=1) | 85.00 ± 1.00 (n=2) |" in md
    rows = to_csv(cells).strip().splitlines()
    assert rows[0].startswith("dataset,ipc") and len(rows) == 1 + 5


def test_bad_inputs(tmp_path):
    with pytest.raises(RetaError, match="neither"):
        find_metrics([tmp_path / "missing"])
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "metrics.json").write_text("{}")
    with pytest.raises(RetaError, match="not a reta metrics.json"):
        collect(find_metrics([tmp_path]))

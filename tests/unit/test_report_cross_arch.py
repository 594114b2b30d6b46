"""reta-report's cross-architecture table: sets × student architectures, seeds merged across runs."""

from __future__ import annotations

import json

from reta.reporting.cross_arch import to_markdown
from reta.reporting.tables import collect


def _write(path, method, student, seeds, accs):
    path.mkdir(parents=True)
    m = {"dataset": "fashion_mnist", "ipc": 10, "protocol": "kd", "student": student, "method": method,
         "label": None, "seeds": seeds, "sets": {"distilled": {"acc_last": accs}}}
    (path / "metrics.json").write_text(json.dumps(m))
    return path / "metrics.json"


def test_rows_are_sets_and_columns_are_students(tmp_path):
    paths = [_write(tmp_path / "a", "reta", "convnet", [0], [0.80]),
             _write(tmp_path / "b", "reta", "convnet", [1], [0.90]),  # another seed of the same cell, another run
             _write(tmp_path / "c", "reta", "resnet18_cifar", [0, 1], [0.60, 0.70]),
             _write(tmp_path / "d", "rded", "convnet", [0], [0.50])]
    md = to_markdown(collect(paths))
    assert "| method | convnet | resnet18_cifar | mean over students |" in md
    assert "| reta | 85.00 ± 5.00 (n=2) | 65.00 ± 5.00 (n=2) | 75.00 |" in md
    assert "| rded | 50.00 ± 0.00 (n=1) | – | 50.00 (1 of 2) |" in md
    assert "fashion_mnist IPC 10 — cross-architecture, protocol kd" in md


def test_one_student_gives_no_table(tmp_path):
    paths = [_write(tmp_path / "a", "reta", "convnet", [0], [0.8]),
             _write(tmp_path / "b", "rded", "convnet", [0], [0.5])]
    assert to_markdown(collect(paths)) == ""

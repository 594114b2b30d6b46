"""Evaluation add-ons end to end on a tiny IDX fixture: the cached full-data student (sets.full)."""

from __future__ import annotations

import json

import pytest

from reta import evaluate

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides


@pytest.fixture()
def tiny(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    ov = tiny_overrides(tmp_path, root)
    return tmp_path, [*ov, "protocol=hard", "model@student=convnet_tiny", "protocol.epochs=2",
                      "protocol.eval_every=1", "protocol.batch_size=8", "ipc=1", "seeds=[0,1]"]


def test_full_data_student_is_trained_once_and_cached(tiny):
    tmp_path, ev = tiny
    m = evaluate.run(compose_cfg("evaluate", [*ev, "full_data.enabled=true", "full_data.epochs=1"]))
    assert set(m["sets"]) == {"random", "full"} and len(m["sets"]["full"]["acc_last"]) == 1
    entries = list((tmp_path / "cache" / "full_data").glob("*.json"))
    assert len(entries) == 1
    stored = json.loads(entries[0].read_text())
    assert stored["key"]["protocol"]["epochs"] == 1 and stored["key"]["seed"] == 0
    mtime = entries[0].stat().st_mtime_ns
    again = evaluate.run(compose_cfg("evaluate", [*ev, "full_data.enabled=true", "full_data.epochs=1",
                                                  "overwrite=true"]))
    assert again["sets"]["full"]["acc_last"] == m["sets"]["full"]["acc_last"]
    assert entries[0].stat().st_mtime_ns == mtime, "the cached full-data student was retrained"
    evaluate.run(compose_cfg("evaluate", [*ev, "full_data.enabled=true", "full_data.epochs=2", "overwrite=true"]))
    assert len(list((tmp_path / "cache" / "full_data").glob("*.json"))) == 2  # another recipe, another entry

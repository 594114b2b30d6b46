"""eval_pool=cross_arch trains every pool student on the same set; each gets its own metrics.json."""

from __future__ import annotations

import json

import pytest

from reta import evaluate

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides

pytestmark = pytest.mark.slow  # trains every student of the cross-architecture pool


def test_cross_arch_pool_runs_every_student(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=20, classes=10, gz=True)
    ov = [*tiny_overrides(tmp_path, root), "protocol=hard", "protocol.epochs=1", "protocol.eval_every=1", "ipc=1",
          "seeds=[0]"]
    cfg = compose_cfg("evaluate", [*ov, "eval_pool=cross_arch"])
    # keep the test small: two architectures of the pool, a transformer and a CIFAR-stem CNN
    cfg.eval_pool.students = {k: v for k, v in cfg.eval_pool.students.items() if k in ("vit_tiny", "shufflenetv2")}
    out = evaluate.run(cfg)
    assert out["students"] == ["shufflenetv2", "vit_tiny"]
    for label, name in (("shufflenetv2", "shufflenet_v2_x0_5_cifar"), ("vit_tiny", "vit_tiny_patch16_224")):
        m = json.loads((tmp_path / "out" / "cross_arch" / label / "metrics.json").read_text())
        assert m["student"] == name and len(m["sets"]["random"]["acc_last"]) == 1
    assert "shufflenet_v2_x0_5_cifar" in (tmp_path / "out" / "cross_arch.md").read_text()

"""eval_pool=cross_arch trains every pool student on the same set; each gets its own metrics.json; resume=true keeps
the finished ones."""

from __future__ import annotations

import json

import pytest

from reta import evaluate
from reta.errors import RetaError

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides


@pytest.mark.slow  # trains real architectures of the cross-architecture pool
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


def test_pool_resume_keeps_finished_students_and_refuses_another_run(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=20, classes=10, gz=True)
    ov = [*tiny_overrides(tmp_path, root), "protocol=hard", "protocol.epochs=1", "protocol.eval_every=1", "ipc=1",
          "seeds=[0]"]
    pool = {"a": {"name": "convnet_tiny", "kwargs": {}}, "b": {"name": "convnet_tiny", "kwargs": {"width": 4}}}

    def cfg(*extra):
        c = compose_cfg("evaluate", [*ov, "eval_pool=cross_arch", *extra])
        c.eval_pool.students = pool
        return c

    evaluate.run(cfg())
    a, b = (tmp_path / "out" / "cross_arch" / k / "metrics.json" for k in ("a", "b"))
    mtime_a = a.stat().st_mtime_ns
    b.unlink()  # as if the run had been stopped before student b
    with pytest.raises(RetaError, match="already holds a finished evaluation"):
        evaluate.run(cfg())
    out = evaluate.run(cfg("resume=true"))
    assert out["students"] == ["a", "b"] and b.is_file()
    assert a.stat().st_mtime_ns == mtime_a, "a finished pool student was retrained"
    with pytest.raises(RetaError, match="belongs to another evaluation"):
        evaluate.run(cfg("resume=true", "seeds=[1]"))

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


def test_pool_student_protocol_settings_apply_to_that_student_only(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=20, classes=10, gz=True)
    ov = [*tiny_overrides(tmp_path, root), "protocol=hard", "protocol.epochs=1", "protocol.eval_every=1", "ipc=1",
          "seeds=[0]"]
    pool = {"a": {"name": "convnet_tiny", "kwargs": {}},
            "b": {"name": "convnet_tiny", "kwargs": {}, "protocol": {"lr": 0.0001, "batch_size": 4}}}

    def cfg(*extra, students=pool):
        c = compose_cfg("evaluate", [*ov, "eval_pool=cross_arch", *extra])
        c.eval_pool.students = students
        return c

    evaluate.run(cfg())
    a, b = (json.loads((tmp_path / "out" / "cross_arch" / k / "metrics.json").read_text()) for k in ("a", "b"))
    run_lr = cfg().protocol.lr
    assert a["protocol_config"]["lr"] == run_lr != 0.0001
    assert b["protocol_config"]["lr"] == 0.0001 and b["protocol_config"]["batch_size"] == 4
    assert "protocol" not in b["student_config"]
    # the same pool again: both finished students are kept (no false refusal of a student with its own settings)
    stamps = [(tmp_path / "out" / "cross_arch" / k / "metrics.json").stat().st_mtime_ns for k in ("a", "b")]
    evaluate.run(cfg("resume=true"))
    assert [(tmp_path / "out" / "cross_arch" / k / "metrics.json").stat().st_mtime_ns for k in ("a", "b")] == stamps
    # the same pool with another lr for b: its stored student is refused on resume, not kept as if it were this run's
    changed = {**pool, "b": {**pool["b"], "protocol": {"lr": 0.01, "batch_size": 4}}}
    with pytest.raises(RetaError, match=r"protocol\.lr.*remove .*cross_arch.b to train that student again"):
        evaluate.run(cfg("resume=true", students=changed))
    scaled = {**pool, "b": {"name": "convnet_tiny", "kwargs": {}, "lr_scale": 0.1,
                            "protocol": {"batch_size": 4}}}  # 0.1 × the run's lr is not the stored 1e-4
    with pytest.raises(RetaError, match=r"protocol\.lr"):
        evaluate.run(cfg("resume=true", students=scaled))
    other_arch = {**pool, "a": {"name": "convnet_tiny", "kwargs": {"width": 4}}}
    with pytest.raises(RetaError, match=r"student_config"):
        evaluate.run(cfg("resume=true", students=other_arch))


def test_pool_student_protocol_with_an_unknown_key_is_refused_before_any_work(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=20, classes=10, gz=True)
    c = compose_cfg("evaluate", [*tiny_overrides(tmp_path, root), "protocol=hard", "eval_pool=cross_arch"])
    c.eval_pool.students = {"a": {"name": "convnet_tiny", "kwargs": {}, "protocol": {"learning_rate": 0.1}}}
    message = r"eval_pool\.students\.a\.protocol: unknown key\(s\) \['learning_rate'\].*valid: .*lr"
    with pytest.raises(RetaError, match=message):
        evaluate.run(c)
    bad = {
        r"lr_scale: a positive number .* got -1": {"lr_scale": -1},
        r"a: unknown key\(s\) \['lr_scal'\]; valid: name, kwargs, lr_scale, protocol": {"lr_scal": 0.1},
        r"a\.protocol: a map of protocol settings": {"protocol": 3},
        r"lr_scale and protocol\.lr both set the learning rate": {"lr_scale": 0.1, "protocol": {"lr": 0.1}},
        r"optimizer": {"protocol": {"optimizer": "rmsprop"}},  # a value the protocol's own checks refuse
    }
    for message, extra in bad.items():
        c.eval_pool.students = {"ok": {"name": "convnet_tiny", "kwargs": {}},
                                "a": {"name": "convnet_tiny", "kwargs": {}, **extra}}
        with pytest.raises(RetaError, match=message):
            evaluate.run(c)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("protocol", ["kd", "hard"])
def test_the_pools_scale_the_protocols_lr_as_rded_does_per_architecture(tmp_path, protocol):
    """RDED's evaluation (LINs-lab/RDED argument.py): MobileNetV2 2.5 ×, ViT / Swin 0.1 × the ConvNet/ResNet lr."""
    for pool, scaled in (("cross_arch", {"mobilenetv2": 2.5, "vit_tiny": 0.1}),
                         ("cross_arch_224", {"mobilenetv2": 2.5, "swin_tiny": 0.1})):
        cfg = compose_cfg("evaluate", [f"protocol={protocol}", f"eval_pool={pool}", f"paths.output_dir={tmp_path}"])
        base = cfg.protocol.lr
        for label, entry in cfg.eval_pool.students.items():
            sub = evaluate.pool_student_cfg(cfg, label, dict(entry))
            assert sub.protocol.lr == pytest.approx(base * scaled.get(label, 1.0), rel=1e-12)
            assert "lr_scale" not in sub.student and "protocol" not in sub.student
    kd = compose_cfg("evaluate", ["protocol=kd", "eval_pool=cross_arch", f"paths.output_dir={tmp_path}"])
    assert evaluate.pool_student_cfg(kd, "vit_tiny", dict(kd.eval_pool.students.vit_tiny)).protocol.lr == 0.0001

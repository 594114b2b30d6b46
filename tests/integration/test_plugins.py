"""Capabilities are declared, plug-ins are named: a protocol is a ``_target_`` evaluator (a new one plugs in with a
config and a function), each method config declares its own ``debug=smoke`` shrink (shown by ``--cfg job``), and
every method config declares ``requires_teacher``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from reta import distill, evaluate
from reta.errors import RetaError
from reta.evaluation.metrics import metrics_record
from reta.utils.debug import apply_debug

from fixtures import write_idx_dataset
from helpers import CONF_DIR, compose_cfg, run_cli, tiny_overrides, with_out

METHODS = sorted(p.stem for p in (Path(CONF_DIR) / "method").glob("*.yaml"))


def nearest_mean_evaluator(cfg, inputs):
    """A protocol in a few lines: classify the test split by the nearest per-class mean of the evaluated images."""
    from reta.data.registry import load_split

    test = load_split(cfg.dataset, "test", cfg.paths.data_dir)
    x = test.gather(list(range(len(test)))).flatten(1)
    d = inputs.distilled
    means = d.images.flatten(1).view(d.num_classes, -1, x.shape[1]).mean(1)
    acc = float((((x[:, None] - means[None]) ** 2).sum(-1).argmin(1) == test.targets).float().mean())
    return metrics_record(cfg, inputs, {"distilled": [{"acc_last": acc, "acc_best": acc, "seconds": 0.0}]},
                          protocol=cfg.protocol.name, student="nearest_mean", k=int(cfg.protocol.k))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugins")
    root = write_idx_dataset(tmp / "fmnist", n_train=40, n_test=20, classes=10, gz=False)
    return tmp, tiny_overrides(tmp, root)


def test_a_protocol_plugs_in_as_a_target_evaluator(tiny):
    tmp, ov = tiny
    dist = distill.run(compose_cfg("distill", [*with_out(ov, tmp / "set"), "method=random", "ipc=2"]))
    cfg = compose_cfg("evaluate", [*with_out(ov, tmp / "eval"), "protocol=hard", "protocol.name=nearest_mean",
                                   f"protocol.evaluator._target_={__name__}.nearest_mean_evaluator",
                                   "protocol.requires_teacher=false", "+protocol.k=3",
                                   f"distilled={dist['distilled']}", "seeds=[0]"])
    metrics = evaluate.run(cfg)
    written = json.loads((tmp / "eval" / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    assert written["protocol"] == "nearest_mean" and written["k"] == 3 and written["student"] == "nearest_mean"
    assert 0.0 <= written["sets"]["distilled"]["acc_mean"] <= 1.0 and written["ipc"] == 2
    bad = compose_cfg("evaluate", [*with_out(ov, tmp / "bad"), "protocol.evaluator._target_=nowhere.evaluate"])
    with pytest.raises(RetaError, match=r"^protocol\.evaluator: cannot load 'nowhere\.evaluate'"):
        evaluate.run(bad)
    bad = compose_cfg("evaluate", [*with_out(ov, tmp / "bad"), "~protocol.requires_teacher"])
    with pytest.raises(RetaError, match=r"^protocol\.requires_teacher: missing"):
        evaluate.run(bad)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_declares_its_capabilities_and_smoke_shrink(method):
    cfg = compose_cfg("distill", ["paths.output_dir=/tmp/reta-plugins", f"method={method}"])
    assert isinstance(cfg.method.requires_teacher, bool) and "eval_protocol" in cfg.method and "smoke" in cfg.method
    shrunk = apply_debug(compose_cfg("distill", ["paths.output_dir=/tmp/reta-plugins", f"method={method}",
                                                 "debug=smoke"])).method
    for key, value in OmegaConf.to_container(cfg.method.smoke).items():
        if key in cfg.method and not isinstance(value, dict):
            assert shrunk[key] == value or (OmegaConf.is_list(shrunk[key]) and set(shrunk[key]) == {value})


def test_a_method_without_requires_teacher_is_refused(tiny):
    tmp, ov = tiny
    cfg = compose_cfg("distill", [*with_out(ov, tmp / "nocap"), "method=random", "~method.requires_teacher"])
    with pytest.raises(RetaError, match=r"^method\.requires_teacher: missing"):
        distill.run(cfg)


@pytest.mark.slow  # a subprocess per call
def test_cfg_job_shows_the_smoke_budget(tmp_path):
    proc = run_cli("reta-distill", ["method=sfm", "debug=smoke", "--cfg", "job"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    job = OmegaConf.create(proc.stdout)
    assert job.method.iterations == job.method.smoke.iterations == 4 and job.method.extent_every == 2
    plain = OmegaConf.create(run_cli("reta-distill", ["method=sfm", "--cfg", "job"], tmp_path).stdout)
    assert plain.method.iterations == 2000
    assert not list(tmp_path.iterdir()), "--cfg job writes nothing"

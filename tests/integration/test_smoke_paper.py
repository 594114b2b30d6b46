"""debug=smoke shrinks every stage of a paper-scale config (applied after method/per_dataset/* and +experiment), and one
cell of the paper-grid smoke (``make smoke-paper``) runs end to end: generated ImageNet-layout JPEGs, the
``table1_paper`` ImageNet-1K setting with its pretrained teacher from a local weight file, SRe2L, KD students."""

from __future__ import annotations

import json

import pytest

from reta.utils.debug import apply_debug

from helpers import REPO, compose_cfg, run_cli

BASE = ["paths.output_dir=/tmp/x", "paths.cache_dir=/tmp/c"]


@pytest.mark.parametrize("method", ["sre2l", "fadrm", "fadrm_plus", "reta"])
def test_smoke_shrinks_the_paper_grid(method):
    paper = compose_cfg("pipeline", [*BASE, "+experiment=table1_paper", "dataset=imagenette", f"method={method}"])
    assert paper.protocol.epochs == 300 and paper.seeds == [0, 1, 2] and paper.method.stages.budgets[0] >= 500
    cfg = apply_debug(compose_cfg("pipeline", [*BASE, "+experiment=table1_paper", "dataset=imagenette",
                                               f"method={method}", "debug=smoke"]))
    assert cfg.protocol.epochs == 1 and cfg.seeds == [0] and cfg.recipe.epochs == 1 and not cfg.progress_bar
    assert list(cfg.method.stages.budgets) == [2] * len(paper.method.stages.budgets)
    assert list(cfg.method.stages.sizes) == list(paper.method.stages.sizes)  # the paper's resolutions stay
    assert cfg.method.init.mipc == 4
    if method == "reta":
        assert cfg.method.callbacks.pta.num_subsets == 2
    else:
        assert "pta" not in cfg.method.callbacks  # a debug option never adds a section
    assert apply_debug(cfg) == cfg  # idempotent


@pytest.mark.parametrize("method", ["dm", "idm_iid"])
def test_smoke_shrinks_the_dm_paper_configs(method):
    cfg = apply_debug(compose_cfg("pipeline", [*BASE, "dataset=cifar100", f"method={method}", "protocol=hard",
                                               "debug=smoke"]))
    assert cfg.method.scale == "paper" and cfg.method.iterations == 2 and cfg.method.batch_real == 8
    assert cfg.method.get("per_ipc") is None and cfg.protocol.epochs == 1


@pytest.mark.slow  # reta-run subprocess, ~45 s
def test_smoke_cell_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # the smoke run's own data and weight-file writers
    from fake_data import write_imagenet_layout, write_weight_file

    root = write_imagenet_layout(tmp_path / "imagenet", 3, n_train=4, n_val=2, size=(50, 40), seed=0)
    write_weight_file("resnet18.tv_in1k", 3, tmp_path / "weights" / "resnet18.tv_in1k.pth")
    out = tmp_path / "run"
    proc = run_cli("reta-run", [
        "+experiment=table1_paper", "dataset=imagenet1k", f"dataset.root={root}", "dataset.num_classes=3",
        "dataset.image_size=32", f"teacher.pretrained_dir={tmp_path / 'weights'}", "method=sre2l", "ipc=1",
        "debug=smoke", "++method.smoke.stages.sizes=32", "trainer=cpu", "logger=none", "num_threads=1",
        f"paths.output_dir={out}", f"paths.cache_dir={tmp_path / 'cache'}",
    ], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["sets"]) == {"random", "distilled"} and metrics["seeds"] == [0]
    assert metrics["protocol_config"]["epochs"] == 1 and metrics["student"] == "resnet18"
    teacher = json.loads((out / "teacher.json").read_text())
    assert teacher["source"] == "pretrained" and teacher["weights"] == "file:resnet18.tv_in1k.pth"
    meta = json.loads((out / "distilled" / "meta.json").read_text())
    assert meta["synthesis"]["jobs"] == 1 and meta["synthesis"]["steps"] == 2  # one batch of 3 classes × 2 steps

"""The RDED / EDC / CV-DD configs: every paper-scale row composes and passes its family's checks (no data)."""

from __future__ import annotations

import pytest

from reta.distill import check_method

from helpers import REPO, compose_cfg

DATASETS = ["fashion_mnist", "cifar100", "tiny_imagenet", "imagenette", "imagewoof", "imagenet1k"]


@pytest.mark.parametrize("method", ["rded", "edc", "cvdd"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_paper_rows_compose_and_validate(tmp_path, method, dataset):
    cfg = compose_cfg("distill", [f"method={method}", f"dataset={dataset}", f"paths.output_dir={tmp_path}"])
    check_method(cfg)
    assert cfg.method.name == method
    assert cfg.method.scale == ("cpu" if dataset == "fashion_mnist" else "paper")


@pytest.mark.parametrize("experiment", ["table1_cpu", "table1_paper", "table2_cpu"])
def test_the_baselines_are_in_the_table_grids(tmp_path, experiment):
    from omegaconf import OmegaConf

    compose_cfg("pipeline", [f"+experiment={experiment}", f"paths.output_dir={tmp_path}"])  # composes
    grid = OmegaConf.load(REPO / "src" / "reta" / "conf" / "experiment" / f"{experiment}.yaml")
    methods = set(grid.hydra.sweeper.params.method.split(","))
    assert {"rded", "edc", "cvdd", "fadrm_plus", "reta"} <= methods


@pytest.mark.parametrize("method", ["rded", "edc", "cvdd"])
def test_debug_smoke_shrinks_their_paper_rows(tmp_path, method):
    from reta.utils.debug import apply_debug

    ov = [f"paths.output_dir={tmp_path}", "+experiment=table1_paper", "dataset=imagenette", f"method={method}"]
    paper = compose_cfg("pipeline", ov)
    cfg = apply_debug(compose_cfg("pipeline", [*ov, "debug=smoke"]))
    if method == "rded":
        assert (paper.method.mipc, cfg.method.mipc, cfg.method.num_crop) == (300, 8, 2)
    else:
        assert list(cfg.method.stages.budgets) == [2] * len(paper.method.stages.budgets)
        assert paper.method.stages.budgets[0] >= 50 and cfg.method.init.mipc == 4
    check_method(cfg)


def test_table2_trains_the_random_pool_once_not_once_per_method_job(tmp_path):
    import re
    import shlex

    job = compose_cfg("pipeline", ["+experiment=table2_cpu", f"paths.output_dir={tmp_path}"])
    assert job.baseline is False  # the method jobs train the distilled sets' pools only
    recipe = (REPO / "Makefile").read_text().split("\ntable2:", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")
    line = re.search(r"reta-evaluate (.*)", recipe).group(1).replace("$(SCALE)", "cpu")
    overrides = [o for o in shlex.split(line) if not o.startswith("paths.output_dir=")]
    rnd = compose_cfg("evaluate", [*overrides, f"paths.output_dir={tmp_path}"])
    assert rnd.baseline is True and list(rnd.seeds) == [0, 1, 2] and rnd.ipc == 10 and rnd.get("distilled") is None
    assert set(rnd.eval_pool.students) == set(job.eval_pool.students)

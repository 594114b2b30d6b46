"""Per-dataset method settings (conf/method/per_dataset/): found by name or through the _fallback.yaml chain, composed
by Hydra (so ``--cfg job`` shows them), and beaten by the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from reta.errors import RetaError
from reta.utils import per_dataset
from reta.utils.per_dataset import fallback_links

from helpers import CONF_DIR, compose_cfg

BASE = ["paths.output_dir=/tmp/x", "paths.cache_dir=/tmp/c"]
FOLDER = Path(CONF_DIR) / "method" / "per_dataset"


def method(name: str, dataset: str, *extra: str):
    return compose_cfg("distill", [*BASE, f"method={name}", f"dataset={dataset}", *extra]).method


def test_the_chain_links_methods_without_a_file_to_their_base():
    links = fallback_links()
    assert links["fadrm_drc_cifar100"] == "fadrm_cifar100"
    assert links["fadrm_drc_fashion_mnist"] == "fadrm_fashion_mnist"
    assert links["fadrm_plus_fashion_mnist"] == "fadrm_fashion_mnist"
    assert links["reta_imagenet1k"] == "fadrm_plus_imagenet1k"  # reta → fadrm_plus, which has its own file
    assert links["reta_tiny_imagenet"] == "fadrm_plus_tiny_imagenet"
    assert "reta_fashion_mnist" not in links and "fadrm_cifar100" not in links  # own files are used as they are
    assert "fadrm_cifar10" not in links  # no file anywhere in the chain: nothing is applied


@pytest.mark.parametrize("name", ["fadrm", "fadrm_plus", "fadrm_drc", "fadrm_pta", "reta"])
def test_every_bn_method_gets_the_paper_stages_on_cifar100(name):
    m = method(name, "cifar100")
    assert m.scale == "paper" and list(m.stages.budgets) == [500] * 4 and m.classes_per_batch == 100
    # the ablations keep their single teacher (their own _self_ comes before the per-dataset file, which sets none)
    assert (m.teachers is None) is (name in ("fadrm", "fadrm_drc", "fadrm_pta"))


def test_fadrm_plus_inherits_fadrm_and_keeps_its_teachers():
    fm, fm_plus = method("fadrm", "fashion_mnist"), method("fadrm_plus", "fashion_mnist")
    assert fm_plus.lr == fm.lr == 0.02 and fm_plus.per_ipc == fm.per_ipc and fm_plus.init == fm.init
    assert [t if isinstance(t, str) else t["label"] for t in fm_plus.teachers] == [
        "convnet_d3_w32", "convnet_d3_w16", "convnet_d4_w16"]
    net, net_plus = method("fadrm", "imagenette"), method("fadrm_plus", "imagenette")
    assert net.lr == 0.05 and net_plus.lr == 0.25  # FADRM+'s own step size on ImageNette
    assert net_plus.stages == net.stages and net_plus.augment == net.augment and len(net_plus.teachers) == 3


def test_a_linked_setting_yields_to_the_command_line():
    assert method("fadrm_drc", "cifar100", "method.lr=0.123", "method.stages.budgets=[2,2,2,2]").lr == 0.123


def test_no_per_dataset_file_is_a_bare_alias():
    """A file that only names another file is what the chain replaces; no two methods carry the same file for one
    dataset either (FADRM+ inherits FADRM's through _fallback.yaml or its defaults list instead)."""
    datasets = sorted((p.stem for p in (Path(CONF_DIR) / "dataset").glob("*.yaml")), key=len, reverse=True)
    bodies = {}
    for path in sorted(FOLDER.glob("*.yaml")):
        if path.name.startswith("_"):
            continue
        values = OmegaConf.to_container(OmegaConf.load(path)) or {}
        assert set(values) - {"defaults"}, f"{path.name} has no settings of its own"
        dataset = next(d for d in datasets if path.stem.endswith(f"_{d}"))
        key = (dataset, json.dumps(values, sort_keys=True))
        assert key not in bodies, f"{path.name} repeats {bodies.get(key)}"
        bodies[key] = path.name


def test_a_bad_chain_is_one_line_naming_the_valid_methods(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "method" / "per_dataset" / "_fallback.yaml").write_text("fadrm_drc: fadrmm\n")
    monkeypatch.setattr(per_dataset, "CONF", conf)
    with pytest.raises(RetaError, match=r"unknown methods \(fadrm_drc: fadrmm\); valid: .*fadrm, fadrm_drc"):
        fallback_links()
    (conf / "method" / "per_dataset" / "_fallback.yaml").write_text("sre2l: fadrm_drc\nfadrm_drc: sre2l\n")
    with pytest.raises(RetaError, match="cycle"):
        fallback_links()

"""method=reta / fadrm_drc / fadrm_pta through reta-distill on a tiny IDX fixture: configs compose, RETA with DRC and
PTA off equals FADRM+ bit for bit, α = 1 makes the DRC merge the identity, meta.json records the anchors, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reta import distill
from reta.data.distilled import load_distilled
from reta.utils.config import per_ipc_override, plain

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides

TEACHERS = "method.teachers=[convnet_tiny,{name:convnet,kwargs:{depth:1,width:4,norm:batch},label:c1}]"
TINY = ["ipc=3", "method.stages.sizes=[28,28,28]", "method.stages.budgets=[3,3,2]", "method.init.mipc=6",
        "method.init.num_crop=2", "method.checkpoint_every=4", "method.log_every=1"]
PTA_TINY = ["method.callbacks.pta.refresh_every=2", "method.callbacks.pta.k=3", "method.callbacks.pta.grid=8",
            "method.callbacks.pta.num_subsets=4"]
DRC_OFF, PTA_OFF = "method.residual.anchors.enabled=false", "method.callbacks.pta.enabled=false"
DRC_ON = "method.residual.anchors.enabled=true"  # off by default on Fashion-MNIST (per_dataset/reta_fashion_mnist.yaml)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reta")
    root = write_idx_dataset(tmp / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    return tmp, tiny_overrides(tmp, root)


def run(tiny, name: str, overrides: list[str]) -> dict:
    tmp, ov = tiny
    ov = [o for o in ov if not o.startswith("paths.output_dir=")] + [f"paths.output_dir={tmp / name}"]
    pta = (
        PTA_TINY if any(o.startswith("method=") and o not in ("method=fadrm", "method=fadrm_plus") for o in overrides)
        else []
    )
    return distill.run(compose_cfg("distill", [*ov, *TINY, *pta, *overrides]))


def images(result: dict) -> torch.Tensor:
    return load_distilled(result["distilled"]).images


def test_configs_compose_on_fadrm_plus_and_fadrm(tiny):
    _, ov = tiny
    reta = compose_cfg("distill", [*ov, "method=reta"]).method
    plus = compose_cfg("distill", [*ov, "method=fadrm_plus"]).method
    assert reta.name == "reta" and reta.teachers == plus.teachers and reta.stages == plus.stages
    assert (
        reta.residual.anchors._target_ == "reta.synthesis.reta.drc.RetrievalAnchors"
        and reta.residual.anchors.lam == 0.1
    )
    assert reta.callbacks.pta._target_ == "reta.synthesis.reta.pta.TopologyAlignment"
    # Fashion-MNIST carries its λ_topo and PTA frequency (per_dataset/reta_fashion_mnist.yaml);
    # other datasets the docs/methods.md default
    pta_cfg = reta.callbacks.pta
    assert (pta_cfg.lam_topo, pta_cfg.every, pta_cfg.k, pta_cfg.grid) == (100.0, 4, 10, 32)
    cifar = compose_cfg("distill", [*ov, "method=reta", "dataset=cifar100"]).method
    assert cifar.callbacks.pta.lam_topo == 0.5
    drc = compose_cfg("distill", [*ov, "method=fadrm_drc"]).method
    pta = compose_cfg("distill", [*ov, "method=fadrm_pta"]).method
    assert drc.teachers is None and not drc.callbacks.pta.enabled and drc.residual.anchors.enabled
    assert pta.teachers is None and pta.callbacks.pta.enabled and not pta.residual.anchors.enabled
    fadrm = compose_cfg("distill", [*ov, "method=fadrm"]).method
    assert drc.stages == fadrm.stages and drc.lr == fadrm.lr and drc.init == fadrm.init
    # paper scale: RETA on FADRM+'s per-dataset setting, the ablations on FADRM's
    paper = compose_cfg("distill", [*ov, "method=reta", "dataset=tiny_imagenet"]).method
    plus_paper = compose_cfg("distill", [*ov, "method=fadrm_plus", "dataset=tiny_imagenet"]).method
    assert paper.scale == "paper" and paper.teachers == plus_paper.teachers and paper.stages == plus_paper.stages
    assert paper.residual.anchors._target_ == "reta.synthesis.reta.drc.RetrievalAnchors" and paper.callbacks.pta.enabled
    drc_paper = compose_cfg("distill", [*ov, "method=fadrm_drc", "dataset=tiny_imagenet"]).method
    fadrm_paper = compose_cfg("distill", [*ov, "method=fadrm", "dataset=tiny_imagenet"]).method
    assert (
        drc_paper.stages == fadrm_paper.stages and drc_paper.lr == fadrm_paper.lr == 0.01 and drc_paper.teachers is None
    )


def test_reta_with_drc_and_pta_off_equals_fadrm_plus_bit_for_bit(tiny):
    plus = run(tiny, "plus", ["method=fadrm_plus", TEACHERS])
    reta_off = run(tiny, "reta_off", ["method=reta", TEACHERS, DRC_OFF, PTA_OFF])
    assert torch.equal(images(plus), images(reta_off))


def test_reta_at_ipc1_on_fashion_mnist_is_fadrm_plus_bit_for_bit(tiny):
    """The DRC decision (per_dataset/reta_fashion_mnist.yaml: anchors off, experiments/drc_ipc1) plus PTA's own IPC-1
    switch-off make RETA the FADRM+ set at IPC 1."""
    tmp, ov = tiny
    one = [o for o in TINY if o != "ipc=3"] + ["ipc=1"]
    cfg = compose_cfg("distill", [*ov, "method=reta", "ipc=1"])
    assert cfg.method.residual.anchors.enabled is False
    out = {}
    for method in ("fadrm_plus", "reta"):
        ov2 = [o for o in ov if not o.startswith("paths.output_dir=")] + [f"paths.output_dir={tmp / (method + '_1')}"]
        extra = PTA_TINY if method == "reta" else []
        out[method] = distill.run(compose_cfg("distill", [*ov2, *one, *extra, f"method={method}", TEACHERS]))
    assert torch.equal(images(out["fadrm_plus"]), images(out["reta"]))
    meta = json.loads((Path(out["reta"]["distilled"]) / "meta.json").read_text())["synthesis"]
    assert meta["residual"]["anchors"]["kind"] == "static" and meta["residual"]["anchors"]["enabled"] is False


@pytest.mark.parametrize("ipc", [1, 3, 10, 50])
def test_reta_fashion_mnist_has_drc_off_and_pta_on_at_every_ipc(tiny, ipc):
    """The held-out DRC decisions (experiments/drc_ipc1, drc_ipc10, drc_ipc50): on Fashion-MNIST RETA's anchors are
    FADRM's fixed ones at every IPC and PTA stays switched on; the one per-IPC block left is FADRM+'s IPC-1 init."""
    _, ov = tiny
    method = plain(compose_cfg("distill", [*ov, "method=reta", f"ipc={ipc}"]).method)
    merged, applied = per_ipc_override(method, ipc)
    assert applied is (ipc == 1) and merged["lr"] == (0.25 if ipc == 1 else 0.02)
    assert merged["residual"]["anchors"]["enabled"] is False
    assert merged["callbacks"]["pta"]["enabled"] is True and merged["callbacks"]["pta"]["lam_topo"] == 100.0
    on = plain(compose_cfg("distill", [*ov, "method=reta", f"ipc={ipc}", DRC_ON]).method)
    assert per_ipc_override(on, ipc)[0]["residual"]["anchors"]["enabled"] is True  # the switch back is one key


def test_alpha_one_drc_merge_is_the_identity_bit_for_bit(tiny):
    plus = run(tiny, "plus_a1", ["method=fadrm_plus", TEACHERS, "method.residual.alpha=1.0"])
    drc = run(tiny, "drc_a1", ["method=reta", TEACHERS, DRC_ON, PTA_OFF, "method.residual.alpha=1.0"])
    assert torch.equal(images(plus), images(drc))
    anchors = json.loads((Path(drc["distilled"]) / "meta.json").read_text())["synthesis"]["residual"]["anchors"]
    assert anchors["kind"] == "retrieval" and anchors["choices"]["count"] == 10 * 3 * 2  # retrieved, not merged


def test_reta_runs_records_anchors_and_differs_from_fadrm_plus(tiny):
    plus = run(tiny, "plus2", ["method=fadrm_plus", TEACHERS])
    reta = run(tiny, "reta", ["method=reta", TEACHERS, DRC_ON, "method.residual.anchors.reuse=per_connection"])
    assert not torch.equal(images(plus), images(reta))
    meta = json.loads((Path(reta["distilled"]) / "meta.json").read_text())
    assert meta["method"] == "reta" and meta["method_config"]["callbacks"]["pta"]["lam_topo"] == 100.0
    ch = meta["synthesis"]["residual"]["anchors"]["choices"]
    assert len(ch["ranks"]) == 10 and len(ch["ranks"][0]) == 3 and len(ch["ranks"][0][0]) == 2
    for c in range(10):
        for conn in range(2):  # per_connection: the three slots of a class take three different anchors
            assert len({ch["ranks"][c][k][conn] for k in range(3)}) == 3
    assert all(isinstance(s, float) for s in ch["scores"][0][0]) and ch["count"] == 60


@pytest.mark.parametrize("targets", ["once", "refresh"])
def test_reta_resume_after_kill_gives_the_uninterrupted_images(tiny, targets):
    """Both PTA target draws: once (per-(class, size) seeded generators) and refresh (one generator, saved state)."""
    tmp, _ = tiny
    marker = tmp / f"killed_{targets}.marker"
    kill = [f"+method.callbacks.kill={{_target_:helpers.KillAt,at_step:13,marker:'{marker}'}}"]
    base = ["method=fadrm_pta", "method.residual.anchors.enabled=true", "method.residual.anchors.reuse=never",
            f"method.callbacks.pta.targets={targets}", *kill]
    marker.touch()
    ref = run(tiny, f"ref_{targets}", base)
    marker.unlink()
    with pytest.raises(RuntimeError, match="killed"):
        run(tiny, f"killed_{targets}", base)
    state = torch.load(tmp / f"killed_{targets}" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["module"]["next_step"] == 12 and "TopologyAlignment" in state["callbacks"]
    resumed = run(tiny, f"killed_{targets}", [*base, "resume=true"])
    assert torch.equal(images(ref), images(resumed))
    a, b = (
        json.loads((Path(r["distilled"]) / "meta.json").read_text())["synthesis"]["residual"] for r in (ref, resumed)
    )
    assert a == b

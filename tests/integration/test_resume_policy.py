"""The one resume policy of every synthesis family — BN, DM, frozen-backbone, process matching (docs/architecture.md
"Contracts", :mod:`reta.synthesis.runtime`): ``resume=true`` without a checkpoint warns and starts from scratch,
giving exactly the images of a run without ``resume``; without ``resume`` a stale checkpoint is removed."""

from __future__ import annotations

import logging

import pytest
import torch

from reta import distill
from reta.data.distilled import load_distilled
from reta.synthesis.runtime import resume_from

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides, with_out

FAMILIES = {
    "bn": ["method=fadrm", "ipc=1", "method.stages.sizes=[28,28]", "method.stages.budgets=[2,2]", "method.init.mipc=4",
           "method.init.num_crop=2"],
    "dm": ["method=dm", "ipc=1", "method.iterations=2", "method.batch_real=4", "method.embedder.kwargs.depth=2",
           "method.embedder.kwargs.width=8"],
    "frozen": ["method=sfm", "ipc=1", "method.iterations=3", "method.extent_every=2", "backbone=random",
               "backbone.model.kwargs.depth=2", "backbone.model.kwargs.width=8"],
    "process": ["method=dc", "ipc=1", "method.iterations=2", "method.batch_real=4", "method.batch_train=8",
                "method.net.kwargs.depth=2", "method.net.kwargs.width=8"],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    root = write_idx_dataset(tmp / "fmnist", n_train=60, n_test=20, classes=10, gz=False)
    return tmp, tiny_overrides(tmp, root)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_resume_without_a_checkpoint_warns_and_starts_from_scratch(tiny, family, caplog):
    tmp, ov = tiny
    args = [*ov, *FAMILIES[family]]
    plain = load_distilled(distill.run(compose_cfg("distill", with_out(args, tmp / f"{family}_plain")))["distilled"])
    with caplog.at_level(logging.WARNING, logger="reta.synthesis.runtime"):
        res = distill.run(compose_cfg("distill", [*with_out(args, tmp / f"{family}_resume"), "resume=true"]))
    warned = [r.getMessage() for r in caplog.records if "starting from scratch" in r.getMessage()]
    assert len(warned) == 1 and "resume=true but" in warned[0] and "last.ckpt" in warned[0]
    assert torch.equal(load_distilled(res["distilled"]).images, plain.images)


def test_resume_from_keeps_loads_or_removes(tmp_path, caplog):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"x")
    assert resume_from(ckpt, True) == ckpt and ckpt.is_file()
    assert resume_from(ckpt, False) is None and not ckpt.exists(), "a stale checkpoint is removed without resume"
    with caplog.at_level(logging.WARNING, logger="reta.synthesis.runtime"):
        assert resume_from(ckpt, True) is None
    assert any("starting from scratch" in r.getMessage() for r in caplog.records)

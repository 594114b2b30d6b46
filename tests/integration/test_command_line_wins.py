"""`reta-distill method=fadrm ipc=1 method.lr=0.123` on Fashion-MNIST: the command line beats the per-IPC block of
conf/method/per_dataset/fadrm_fashion_mnist.yaml (IPC 1: lr 0.25, easy band), and the set's meta.json records it."""

from __future__ import annotations

import json
import sys

from reta.cli import distill as cli_distill

from fixtures import write_idx_dataset
from helpers import tiny_overrides

TINY = ["ipc=1", "method.stages.budgets=[2,2]", "method.stages.sizes=[28,28]", "method.init.mipc=4",
        "hydra.output_subdir=null"]


def _effective(tmp_path, monkeypatch, name: str, *extra: str) -> dict:
    root = write_idx_dataset(tmp_path / "fmnist", n_train=40, n_test=20, classes=10, gz=True)
    ov = [o.replace("/out", f"/{name}") for o in tiny_overrides(tmp_path, root)]
    monkeypatch.setattr(sys, "argv", ["reta-distill", *ov, "method=fadrm", "dataset=fashion_mnist", *TINY, *extra])
    cli_distill.main()
    meta = json.loads((tmp_path / name / "distilled" / "meta.json").read_text())
    return meta["synthesis"]["effective_method"]


def test_the_command_line_lr_beats_the_ipc1_block_in_meta_json(tmp_path, monkeypatch):
    given = _effective(tmp_path, monkeypatch, "given", "method.lr=0.123")
    assert given["lr"] == 0.123
    assert given["init"]["band"] == "easy"  # the rest of the IPC-1 block still applies
    block = _effective(tmp_path, monkeypatch, "block")
    assert block["lr"] == 0.25 and block["init"]["band"] == "easy"  # without the override the block sets lr

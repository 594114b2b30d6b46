"""docs/architecture.md "Add a method" runs as written: its config and its code (the module on a temporary path
instead of ``src/reta/synthesis/centroid.py``, found through ``hydra.searchpath``) distil a set of real training
images, IPC per class, nearer the class mean than a random pick; the same seed gives the same images."""

from __future__ import annotations

import re
import sys

import torch

from reta import distill
from reta.data.distilled import load_distilled
from reta.data.registry import load_split

from fixtures import write_idx_dataset
from helpers import REPO, compose_cfg, tiny_overrides, with_out


def _section_blocks(title: str) -> dict[str, str]:
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split(f"### {title}", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```(yaml|python)\n(.*?)```", section, flags=re.S)
    return {lang: "\n".join(line[3:] if line.startswith("   ") else line for line in body.splitlines())
            for lang, body in blocks}


def test_the_add_a_method_example_runs_as_documented(tmp_path, monkeypatch):
    blocks = _section_blocks("Add a method")
    assert "reta.synthesis.centroid.synthesize" in blocks["yaml"] and "def synthesize" in blocks["python"]
    (tmp_path / "centroid_doc.py").write_text(blocks["python"])
    conf = tmp_path / "conf"
    (conf / "method").mkdir(parents=True)
    (conf / "method" / "centroid.yaml").write_text(blocks["yaml"].replace("reta.synthesis.centroid", "centroid_doc"))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("centroid_doc", None)
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=20, classes=10, gz=False)
    ov = [*tiny_overrides(tmp_path, root), "method=centroid", "ipc=2", f"hydra.searchpath=[file://{conf}]"]
    first = load_distilled(distill.run(compose_cfg("distill", with_out(ov, tmp_path / "a")))["distilled"])
    again = load_distilled(distill.run(compose_cfg("distill", with_out(ov, tmp_path / "b")))["distilled"])
    assert torch.equal(first.images, again.images)
    assert first.meta["method"] == "centroid" and first.labels.tolist() == [c for c in range(10) for _ in range(2)]
    train = load_split(compose_cfg("distill", ov).dataset, "train", str(tmp_path / "data"))
    idx = torch.tensor(first.meta["train_indices"])
    assert torch.equal(first.images, train.gather(idx)), "the chosen images are real training images"
    for c in range(10):
        members = (train.targets == c).nonzero().flatten()
        x = train.gather(members).flatten(1)
        d = (x - x.mean(0)).pow(2).sum(1)
        chosen = (first.images[first.labels == c].flatten(1) - x.mean(0)).pow(2).sum(1)
        assert chosen.max() <= d.median(), f"class {c}: the picks are nearer the mean than a typical image"

"""Corruption robustness: every trained student is also tested on corrupted copies of the test split — the 15
ImageNet-C corruptions × severities of :mod:`reta.data.corruptions` — and ``metrics.json`` gains, per set, the
accuracy per corruption and severity and their mean, the mean corruption accuracy (mCA; Hendrycks & Dietterich,
ICLR 2019, reported as accuracy rather than error; RETA Table 4 "average over 15 corruptions × 5 severities").

The corrupted copies are made once per dataset and cached as uint8 under
``${paths.cache_dir}/corruptions/<dataset>/<corruption>_s<severity>_seed<seed>_<digest>.pt``, the digest covering the
clean images, the constants and the seed; each file stores the digest (SHA-256, 16 hex digits) of its images, checked
on every read.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reta.data.base import ImageDataset, TensorImageDataset
from reta.data.corruptions import check_names, corrupt
from reta.errors import RetaError
from reta.training.common import test_accuracy
from reta.training.soft_labels import digest  # the one tensor digest (sha256 of the bytes)
from reta.utils.cache_files import read_tensors
from reta.utils.config import config_digest
from reta.utils.io import atomic_torch_save
from reta.utils.schema import parse

log = logging.getLogger(__name__)


@dataclass
class RobustnessSpec:
    """The ``robustness`` group's settings (``conf/robustness/*.yaml``, every field set there)."""

    seed: int
    severities: list[int]
    corruptions: list[str]
    batch_size: int
    constants: dict[str, Any]


def check_spec(spec: Mapping) -> RobustnessSpec:
    """The ``robustness`` config's names, severities and constants (before any work)."""
    parsed = parse(RobustnessSpec, spec, "robustness")
    check_names(list(parsed.corruptions), list(parsed.severities), dict(parsed.constants))
    return parsed


def corrupted_images(clean: torch.Tensor, dataset: str, name: str, severity: int, seed: int, constants: Mapping,
                     cache_dir: str | Path, clean_sha: str | None = None) -> torch.Tensor:
    """``clean`` (uint8 ``[N, C, H, W]``) under ``name`` at ``severity``: from the cache, or made and cached."""
    key = {"dataset": dataset, "corruption": name, "severity": int(severity), "seed": int(seed),
           "constants": constants[name][int(severity) - 1], "clean_digest": clean_sha or digest(clean)}
    path = Path(cache_dir) / "corruptions" / dataset / f"{name}_s{severity}_seed{seed}_{config_digest(key)}.pt"
    if path.is_file():
        entry = read_tensors(path, lambda obj: isinstance(obj, dict) and isinstance(obj.get("images"), torch.Tensor))
        images = entry["images"]
        if entry.get("key") != json.dumps(key, sort_keys=True) or digest(images) != entry.get("sha256"):
            raise RetaError(f"corrupted test set {path} does not match its key or checksum; delete it to regenerate")
        return images
    images = corrupt(clean, name, severity, constants, seed)
    atomic_torch_save({"images": images, "sha256": digest(images), "key": json.dumps(key, sort_keys=True)}, path)
    return images


class CorruptedTests:
    """The corrupted copies of one test split, a student add-on (:mod:`reta.evaluation.addons`): :meth:`score` tests
    a trained student on all of them, :meth:`summarize` gives a set's per-corruption accuracies and mCA."""

    name = "robustness"
    preflight = staticmethod(check_spec)

    def __init__(self, spec: Mapping, test: ImageDataset, dataset_cfg: Mapping, cache_dir: str | Path) -> None:
        self.spec = asdict(check_spec(spec))
        self.test, self.cache_dir = test, cache_dir
        self.mean, self.std, self.dataset = dataset_cfg["mean"], dataset_cfg["std"], dataset_cfg["name"]
        n = len(test)
        self.clean = (test.gather(torch.arange(n)) * 255).round().to(torch.uint8)
        self.clean_sha = digest(self.clean)
        self.class_names = list(getattr(test, "class_names", [str(i) for i in range(int(test.targets.max()) + 1)]))
        for name in self.spec["corruptions"]:  # make (or check) every copy once, before any student trains
            for sev in self.spec["severities"]:
                self._images(name, int(sev))

    def _images(self, name: str, severity: int) -> torch.Tensor:
        return corrupted_images(self.clean, self.dataset, name, severity, int(self.spec["seed"]),
                                self.spec["constants"], self.cache_dir, self.clean_sha)

    def score(self, model: nn.Module) -> dict:
        """``{"robustness": {corruption: [accuracy per severity]}}`` of ``model`` (fractions)."""
        device = next(model.parameters()).device
        out = {}
        for name in self.spec["corruptions"]:
            accs = []
            for sev in self.spec["severities"]:
                ds = TensorImageDataset(self._images(name, int(sev)), self.test.targets, self.class_names)
                accs.append(test_accuracy(model, ds, self.mean, self.std, int(self.spec["batch_size"]), device))
            out[name] = accs
        return {self.name: out}

    def summarize(self, runs: list[dict]) -> dict:
        return summarize_robustness(runs, [int(s) for s in self.spec["severities"]])


def summarize_robustness(runs: list[dict], severities: list[int]) -> dict:
    """Per corruption and severity: mean over seeds (and the per-seed lists); ``mca``: the mean over corruptions ×
    severities, per seed and its mean ± population std."""
    names = list(runs[0]["robustness"])
    per_seed_mca = [statistics.fmean(a for n in names for a in r["robustness"][n]) for r in runs]
    return {
        "severities": list(severities),
        "per_corruption": {n: {"acc_mean": [statistics.fmean(r["robustness"][n][i] for r in runs)
                                            for i in range(len(severities))],
                               "per_seed": [r["robustness"][n] for r in runs],
                               "mean": statistics.fmean(a for r in runs for a in r["robustness"][n])}
                           for n in names},
        "mca_per_seed": per_seed_mca,
        "mca": statistics.fmean(per_seed_mca),
        "mca_std": statistics.pstdev(per_seed_mca) if len(per_seed_mca) > 1 else 0.0,
    }


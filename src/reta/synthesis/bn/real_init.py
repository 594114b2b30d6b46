"""Real-image initialisation (EDC): slot ``k`` of class ``c`` starts from a random training image of ``c``.

Source: docs/methods.md §13.1 [code: shaoshitong/EDC `recover/recover.py` ``--initial-img-dir``; arXiv 2404.13733].
The images are drawn per class without replacement by :func:`reta.data.registry.sample_per_class` (seeded; the
reference draws with replacement), normalised and resampled to the first stage's resolution.
"""

from __future__ import annotations

import torch

from reta.data.augment import normalize
from reta.data.registry import sample_per_class
from reta.synthesis.runtime import resample


class RealInit:
    """``init.kind: real`` of the BN wing: a fixed random real image per (class, slot), chosen with ``seed``."""

    kind = "real"

    def __init__(self, dataset, num_classes: int, ipc: int, seed: int) -> None:
        self.ipc = int(ipc)
        self.indices = sample_per_class(dataset.targets, num_classes, self.ipc, int(seed))
        self.images = dataset.gather(self.indices)

    def __call__(self, classes, slot: int, size: int, channels: int, mean, std, gen: torch.Generator) -> torch.Tensor:
        rows = torch.as_tensor(list(classes), dtype=torch.long) * self.ipc + int(slot)
        return resample(normalize(self.images[rows], mean, std), size)

    def describe(self) -> dict:
        return {"train_indices": self.indices.tolist()}

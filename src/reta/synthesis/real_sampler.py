"""Random real images per class (DM, DC/DSA: one real batch per class) or from all classes (IDM's queue), normalised,
on the run's device; every draw comes from the run's generator, so a resumed run draws the same batches."""

from __future__ import annotations

import torch

from reta.data.augment import normalize
from reta.data.registry import class_index


class RealSampler:
    """Random real images per class (or from all classes), normalised, on ``device``; randomness from ``gen``."""

    def __init__(self, train, num_classes: int, mean, std, gen: torch.Generator, device: torch.device) -> None:
        self.train, self.mean, self.std, self.gen, self.device = train, list(mean), list(std), gen, device
        self.groups = class_index(train.targets, num_classes)

    def _load(self, idx: torch.Tensor) -> torch.Tensor:
        return normalize(self.train.gather(idx).to(self.device), self.mean, self.std)

    def of_class(self, c: int, n: int) -> torch.Tensor:
        g = self.groups[c]
        return self._load(g[torch.randperm(len(g), generator=self.gen)[:n]])

    def any(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(len(self.train.targets), generator=self.gen)[:n]
        return self._load(idx), self.train.targets[idx].to(self.device)

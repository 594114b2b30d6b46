"""The one dataset interface every loader returns.

Every split is an :class:`ImageDataset`: ``targets`` (int64 ``[N]``) is always available without touching
pixels, ``__getitem__`` returns ``(image, label)`` with ``image`` float32 ``[C, H, W]`` in ``[0, 1]`` at the
dataset's native resolution (no normalisation: networks see ``(x - mean) / std`` applied by the caller).
Small datasets hold all pixels in memory as uint8 (:class:`TensorImageDataset`) so batches can be gathered
by index without a DataLoader worker round trip.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset


class ImageDataset(Dataset):
    """Base class: subclasses set ``targets``, ``num_classes``, ``class_names`` and implement ``load``."""

    targets: torch.Tensor
    num_classes: int
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.targets.numel())

    def load(self, index: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.load(int(index)), int(self.targets[index])

    def gather(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Float32 ``[len(indices), C, H, W]`` batch in [0, 1] for the given indices."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if idx.numel() == 0:
            raise ValueError("gather() needs at least one index")
        return torch.stack([self.load(int(i)) for i in idx])


class TensorImageDataset(ImageDataset):
    """An in-memory dataset: ``images`` uint8 ``[N, C, H, W]``, ``targets`` int64 ``[N]``."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if targets.ndim != 1 or targets.shape[0] != images.shape[0]:
            raise ValueError(f"targets must be [N] with N={images.shape[0]}, got {tuple(targets.shape)}")
        self.images = images
        self.targets = targets.to(torch.long)
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)

    def load(self, index: int) -> torch.Tensor:
        return self.images[index].float().div_(255.0)

    def gather(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        return self.images[idx].float().div_(255.0)

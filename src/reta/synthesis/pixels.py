"""The synthetic images as a parameter: one tensor, class-ordered, in normalised space.

Every synthesis method (BN matching, distribution matching, …) optimises a :class:`SyntheticImages` module:
``data`` is ``[C·IPC, channels, H, W]`` in *normalised* space ``(pixel − mean) / std`` (the space the reference
implementations optimise in, docs/methods.md §3.2 and §6.1), ordered by class (class 0's IPC images, then class 1's …,
the distilled-set contract of docs/architecture.md). ``pixels()`` maps back to ``[0, 1]`` for writing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reta.data.augment import denormalize, normalize


class SyntheticImages(nn.Module):
    """``num_classes × ipc`` learnable images; index ``c * ipc + k`` is slot ``k`` of class ``c``."""

    def __init__(
        self, init_pixels: torch.Tensor, num_classes: int, ipc: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        if init_pixels.ndim != 4 or init_pixels.shape[0] != num_classes * ipc:
            raise ValueError(f"init_pixels must be [{num_classes * ipc}, C, H, W], got {tuple(init_pixels.shape)}")
        self.num_classes, self.ipc = int(num_classes), int(ipc)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        self.data = nn.Parameter(normalize(init_pixels.float(), mean, std))

    @property
    def labels(self) -> torch.Tensor:
        """int64 ``[C·IPC]`` hard labels in storage order."""
        return torch.arange(self.num_classes).repeat_interleave(self.ipc)

    def index(self, classes: Sequence[int] | torch.Tensor, slot: int) -> torch.Tensor:
        """Storage indices of slot ``slot`` for each class in ``classes``."""
        return torch.as_tensor(classes, dtype=torch.long) * self.ipc + int(slot)

    def pixels(self, clamp: bool = True) -> torch.Tensor:
        """Detached pixel-space copy: denormalised, clamped to [0, 1] unless ``clamp=False`` (docs/methods.md §3.8
        "Output")."""
        x = denormalize(self.data.detach(), self.mean.flatten().tolist(), self.std.flatten().tolist())
        return x.clamp_(0.0, 1.0) if clamp else x

    @torch.no_grad()
    def clamp_(self, index: torch.Tensor | None = None) -> None:
        """Clamp (part of) the images to the normalised image of [0, 1] per channel (docs/methods.md §3.2)."""
        lo, hi = (0.0 - self.mean) / self.std, (1.0 - self.mean) / self.std
        target = self.data if index is None else self.data[index]
        target = torch.max(torch.min(target, hi), lo)
        if index is None:
            self.data.copy_(target)
        else:
            self.data[index] = target

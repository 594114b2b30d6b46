"""Image parameterisations of the frozen-backbone family: a multi-scale pyramid and plain pixels.

Pyramid [code: GeorgeCazenavette/linear-gradient-matching ``src/synsets/pyramid.py``, ``src/synsets/base.py``;
arXiv 2511.16674 Sec. 3]: an image is the sum of levels at sides 1, 2, 4, …, bilinearly upsampled (no antialias) to
the image side, the finest level being the image side itself. Optimisation starts with the 1 × 1 level only; every
``extent_every`` steps the next finer level is added (existing levels × old_count/new_count, the new level
randn/new_count) and the optimiser moments are reset. Decode: for RGB a fixed colour-decorrelation map (the Lucid
matrix of the reference, divided by its largest column norm) per pixel, then ``sigmoid(2·y)`` ∈ (0, 1).

Pixels: the shared :class:`reta.synthesis.pixels.SyntheticImages` (normalised space, clamped to [0, 1] after every
step); ``decode`` denormalises.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reta.data.augment import denormalize
from reta.synthesis.pixels import SyntheticImages

# Colour decorrelation of the reference (rows: output R, G, B; columns: decorrelated channels).
COLOR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


def level_sides(size: int) -> list[int]:
    """1, 2, 4, … below ``size``, then ``size`` itself (28 → 1, 2, 4, 8, 16, 28; 256 → 1 … 256)."""
    sides, s = [], 1
    while s < size:
        sides.append(s)
        s *= 2
    return sides + [size]


class PyramidImages(nn.Module):
    """``n`` images of ``channels × size × size`` as a pyramid; ``active`` levels take part in ``decode``."""

    def __init__(self, n: int, channels: int, size: int, generator: torch.Generator) -> None:
        super().__init__()
        self.n, self.channels, self.size = int(n), int(channels), int(size)
        self.sides = level_sides(self.size)
        self.levels = nn.ParameterList(
            [nn.Parameter(torch.zeros(self.n, self.channels, s, s)) for s in self.sides]
        )
        self.register_buffer("active", torch.tensor(1))
        with torch.no_grad():
            self.levels[0].copy_(torch.randn(self.levels[0].shape, generator=generator))
        cc = COLOR_CORRELATION / COLOR_CORRELATION.norm(dim=0).max()
        self.register_buffer("color", cc)

    @property
    def num_active(self) -> int:
        return int(self.active)

    @torch.no_grad()
    def extend(self, generator: torch.Generator) -> bool:
        """Add the next finer level (False when all levels are active)."""
        old = self.num_active
        if old >= len(self.levels):
            return False
        new = old + 1
        for lv in self.levels[:old]:
            lv.mul_(old / new)
        fresh = self.levels[old]
        fresh.copy_(torch.randn(fresh.shape, generator=generator) / new)
        self.active.fill_(new)
        return True

    def decode(self) -> torch.Tensor:
        """``[n, channels, size, size]`` pixels in (0, 1), differentiable w.r.t. the active levels."""
        y = 0
        for lv in self.levels[: self.num_active]:
            up = lv if lv.shape[-1] == self.size else F.interpolate(lv, size=(self.size, self.size), mode="bilinear",
                                                                     align_corners=False, antialias=False)
            y = y + up
        if self.channels == 3:
            y = torch.einsum("oc,nchw->nohw", self.color.to(y.dtype), y)
        return torch.sigmoid(2 * y)


class PixelImages(nn.Module):
    """Plain pixels (:class:`SyntheticImages`, normalised space) with the pyramid's ``decode``/``extend`` interface."""

    def __init__(self, init_pixels: torch.Tensor, num_classes: int, ipc: int, mean, std) -> None:
        super().__init__()
        self.images = SyntheticImages(init_pixels, num_classes, ipc, mean, std)
        self.mean, self.std = list(mean), list(std)

    def extend(self, generator: torch.Generator) -> bool:
        return False

    def decode(self) -> torch.Tensor:
        return denormalize(self.images.data, self.mean, self.std)

    def clamp_(self) -> None:
        self.images.clamp_()

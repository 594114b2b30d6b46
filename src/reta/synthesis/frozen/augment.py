"""AugStandard, the synthesis-time augmentation of LGM [code: GeorgeCazenavette/linear-gradient-matching
``src/augmentation/standard_aug.py``]: per image a horizontal flip (p 0.5) and a RandomResizedCrop back to the image
side (scale U(``rrc_scale_min``, 1), log-ratio U(log 3/4, log 4/3)), differentiable (affine grid + ``grid_sample``,
:func:`reta.data.augment.random_resized_crop_flip`), then Gaussian noise N(``noise_mean``, ``noise_std``²) added with
probability ``noise_p`` per image. ``noise_mean`` is 0.5 in the reference code (it brightens [0, 1] images); it is kept
as the default for parity and is a config key."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reta.data.augment import random_resized_crop_flip


@dataclass(frozen=True)
class AugSpec:
    """``method.aug`` of the frozen family (values in conf/method/{lgm,sfm}.yaml)."""

    rrc_scale_min: float
    flip: bool
    noise_std: float
    noise_mean: float
    noise_p: float


def aug_standard(x: torch.Tensor, spec: AugSpec, gen: torch.Generator) -> torch.Tensor:
    """One independent AugStandard draw per image of ``x`` (pixels in [0, 1]); randomness from ``gen`` only."""
    dev = x.device
    v = random_resized_crop_flip(x, x.shape[-1], (spec.rrc_scale_min, 1.0), gen, flip=spec.flip)
    if spec.noise_p > 0 and spec.noise_std > 0:
        mask = (torch.rand(x.shape[0], 1, 1, 1, generator=gen) < spec.noise_p).to(x.dtype).to(dev)
        noise = (torch.randn(x.shape, generator=gen) * spec.noise_std + spec.noise_mean).to(x.dtype).to(dev)
        v = v + mask * noise
    return v

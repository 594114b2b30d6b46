"""Batched, tensor-level augmentations for training loops (teacher squeeze, KD students, synthesis).

All functions take pixel-space batches ``[B, C, H, W]`` and draw randomness only from the given
``torch.Generator`` so that a seed fixes the result. Per-sample geometry is expressed as one affine grid per
image and applied with a single ``grid_sample`` call — the vectorised equivalent of torchvision's
``RandomCrop(padding)`` / ``RandomResizedCrop`` + ``RandomHorizontalFlip`` applied image by image.

Sources: RandomResizedCrop box sampling follows torchvision ``transforms.RandomResizedCrop.get_params``
(area fraction ~ U(scale), log-ratio ~ U(log ratio), 10 tries, centre-crop fallback); CutMix follows Yun et al.
2019 (box side √(1−λ), λ ~ Beta(1, 1), random permutation) as used by the FKD/SRe2L/FADRM relabel code
(docs/methods.md §5.1), where the teacher labels the mixed image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64) * (hi - lo) + lo


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """``(x - mean) / std`` per channel."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def denormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Inverse of :func:`normalize`."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * s + m


def _apply_boxes(
    x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int, mode: str = "bilinear"
) -> torch.Tensor:
    """Resample box ``(x0, y0, w, h)`` (pixels of ``x``) of every image to ``size``×``size``, flipping where asked."""
    b, _, h, w = x.shape
    x0, y0, bw, bh = boxes.unbind(1)
    # affine_grid maps output coords in [-1, 1] to input coords; align_corners=False pixel-edge convention.
    sx = bw / w
    sy = bh / h
    tx = (2 * x0 + bw) / w - 1
    ty = (2 * y0 + bh) / h - 1
    sx = torch.where(flip, -sx, sx)
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2] = sx, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    theta = theta.to(x.dtype)
    if x.is_cuda:  # from pinned memory without blocking: no host-device sync per augmented batch
        theta = theta.pin_memory().to(x.device, non_blocking=True)
    grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Per-sample ``RandomCrop(size, padding=pad)`` (zero padding) + ``RandomHorizontalFlip(0.5)``.

    Integer shifts in ``[-pad, pad]`` are exact: the sampling grid lands on pixel centres.
    """
    b, _, h, w = x.shape
    dx = (torch.randint(-pad, pad + 1, (b,), generator=generator).double() if pad > 0
          else torch.zeros(b, dtype=torch.float64))
    dy = (torch.randint(-pad, pad + 1, (b,), generator=generator).double() if pad > 0
          else torch.zeros(b, dtype=torch.float64))
    do_flip = (torch.rand(b, generator=generator) < 0.5) if flip else torch.zeros(b, dtype=torch.bool)
    boxes = torch.stack(
        [dx, dy, torch.full((b,), float(w), dtype=torch.float64), torch.full((b,), float(h), dtype=torch.float64)], 1
    )
    if h != w:
        raise ValueError("random_crop_flip expects square images")
    return _apply_boxes(x, boxes, do_flip, h, mode="nearest")


def rrc_boxes(
    b: int, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """``[b, 4]`` boxes ``(x0, y0, w, h)`` drawn like torchvision's RandomResizedCrop.get_params, vectorised."""
    area = float(h * w)
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    out = torch.empty(b, 4, dtype=torch.float64)
    done = torch.zeros(b, dtype=torch.bool)
    for _ in range(10):
        target = area * _uniform(b, scale[0], scale[1], generator)
        ar = torch.exp(_uniform(b, log_r[0], log_r[1], generator))
        cw = torch.round(torch.sqrt(target * ar))
        ch = torch.round(torch.sqrt(target / ar))
        ok = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h) & ~done
        ux = torch.rand(b, generator=generator, dtype=torch.float64)
        uy = torch.rand(b, generator=generator, dtype=torch.float64)
        x0 = torch.floor(ux * (w - cw + 1))
        y0 = torch.floor(uy * (h - ch + 1))
        out[ok] = torch.stack([x0, y0, cw, ch], 1)[ok]
        done |= ok
    if not done.all():  # torchvision's fallback: central crop at the clamped ratio
        in_ratio = w / h
        if in_ratio < ratio[0]:
            cw, ch = w, round(w / ratio[0])
        elif in_ratio > ratio[1]:
            ch, cw = h, round(h * ratio[1])
        else:
            cw, ch = w, h
        fb = torch.tensor([(w - cw) // 2, (h - ch) // 2, cw, ch], dtype=torch.float64)
        out[~done] = fb
    return out


def random_resized_crop_flip(
    x: torch.Tensor,
    size: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
    shared: bool = False,
) -> torch.Tensor:
    """``RandomResizedCrop(size, scale, ratio)`` + ``RandomHorizontalFlip(0.5)``, bilinear.

    ``shared=True`` draws one box and one flip for the whole batch (SRe2L/FADRM synthesis, docs/methods.md §3.5);
    otherwise every image gets its own (KD student views, docs/methods.md §5.1). Differentiable w.r.t. ``x``.
    """
    b, _, h, w = x.shape
    n = 1 if shared else b
    boxes = rrc_boxes(n, h, w, tuple(scale), tuple(ratio), generator)
    do_flip = (torch.rand(n, generator=generator) < 0.5) if flip else torch.zeros(n, dtype=torch.bool)
    if shared:
        boxes, do_flip = boxes.expand(b, 4), do_flip.expand(b)
    return _apply_boxes(x, boxes, do_flip, size)


def cutmix(x: torch.Tensor, generator: torch.Generator, alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix a batch with a random permutation of itself; returns ``(mixed, perm, lam)``.

    λ ~ Beta(α, α); box side ratio √(1 − λ), centre uniform, clipped to the image (Yun et al. 2019).
    Labels are *not* mixed here: in the KD protocol the teacher labels the mixed image.
    """
    b, _, h, w = x.shape
    perm = torch.randperm(b, generator=generator)
    if alpha == 1.0:  # Beta(1, 1) = U(0, 1)
        lam = float(torch.rand(1, generator=generator, dtype=torch.float64))
    else:  # torch's Beta sampler takes no generator: derive a numpy stream from ours
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    cut = math.sqrt(1.0 - lam)
    cw, ch = int(w * cut), int(h * cut)
    cx = int(torch.randint(0, w, (1,), generator=generator))
    cy = int(torch.randint(0, h, (1,), generator=generator))
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    mixed = x.clone()
    mixed[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    lam_eff = 1.0 - (x1 - x0) * (y1 - y0) / float(w * h)
    return mixed, perm, lam_eff

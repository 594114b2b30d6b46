"""Stored-image parameterisations that expand into more training images: IDM's partition-and-expansion.

IDM [code: uitrbn/IDM ``dc_utils.py`` ``number_sign_augment``, ``downscale``; docs/methods.md §6.2] stores every
synthetic image as a 2 × 2 mosaic of half-resolution images; for matching *and* for student training each stored image
is split into its quadrants and each quadrant is upsampled ×2 (bilinear, ``align_corners=False``), so a set of IPC
stored images per class trains on 4·IPC images per class.

``reta`` stores the mosaics (the storage budget a random subset of the same IPC is compared against) and records
``"expansion": "quadrants"`` in ``meta.json``; :func:`training_view` applies it when a set is loaded for training.
Quadrant order inside one stored image: top-left, bottom-left, top-right, bottom-right (the reference's a, b, c, d);
unlike the reference, the expanded images of one stored image stay together, so class order is preserved.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from reta.errors import RetaError

EXPANSIONS = ("none", "quadrants")


def _check_even(x: torch.Tensor) -> tuple[int, int]:
    if x.ndim != 4:
        raise ValueError(f"expected a [N, C, H, W] batch, got {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"quadrant expansion needs even image sides, got {h}x{w}")
    return h, w


def expand_quadrants(x: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` mosaics → ``[4N, C, H, W]``: each quadrant upsampled ×2; image ``i`` gives rows ``4i..4i+3``.

    Differentiable w.r.t. ``x`` (synthesis calls it on the parameters every step).
    """
    h, w = _check_even(x)
    hh, hw = h // 2, w // 2
    quads = torch.stack(
        [x[:, :, :hh, :hw], x[:, :, hh:, :hw], x[:, :, :hh, hw:], x[:, :, hh:, hw:]], dim=1
    )  # [N, 4, C, hh, hw]
    up = F.interpolate(quads.flatten(0, 1), size=(h, w), mode="bilinear", align_corners=False)
    return up


def make_mosaics(images: torch.Tensor) -> torch.Tensor:
    """``[4N, C, H, W]`` full-size images → ``[N, C, H, W]`` mosaics of their ×0.5 bilinear downscales.

    Rows ``4i..4i+3`` fill mosaic ``i`` in :func:`expand_quadrants` order (IDM's real initialisation).
    """
    h, w = _check_even(images)
    if images.shape[0] % 4:
        raise ValueError(f"make_mosaics needs a multiple of 4 images, got {images.shape[0]}")
    hh, hw = h // 2, w // 2
    small = F.interpolate(images, size=(hh, hw), mode="bilinear", align_corners=False)
    small = small.view(-1, 4, *small.shape[1:])
    out = images.new_empty(small.shape[0], images.shape[1], h, w)
    out[:, :, :hh, :hw] = small[:, 0]
    out[:, :, hh:, :hw] = small[:, 1]
    out[:, :, :hh, hw:] = small[:, 2]
    out[:, :, hh:, hw:] = small[:, 3]
    return out


def factor(kind: str) -> int:
    """Training images per stored image for an expansion kind."""
    if kind not in EXPANSIONS:
        raise RetaError(f"unknown expansion {kind!r}; valid: {', '.join(EXPANSIONS)}")
    return 4 if kind == "quadrants" else 1


def expand(images: torch.Tensor, labels: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply expansion ``kind`` to a stored set; labels are repeated per expanded image."""
    k = factor(kind)
    if k == 1:
        return images, labels
    return expand_quadrants(images).clamp_(0.0, 1.0), labels.repeat_interleave(k)


def training_view(images: torch.Tensor, labels: torch.Tensor, meta: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
    """The images a student trains on: the stored set expanded as ``meta["expansion"]`` says (absent = none)."""
    return expand(images, labels, str(meta.get("expansion", "none") or "none"))

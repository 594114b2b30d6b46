"""Initial synthetic images: Gaussian noise (SRe2L) or teacher-scored real patches (FADRM, RDED-style), cached.

Sources: docs/methods.md §3.6 [code: LINs-lab/RDED `synthesize/main.py`, `synthesize/utils.py` for the selector; the
band layout of Jiacheng8/FADRM `recover/recover.py` (``medium`` patches); applicability recon] and §3.2 for
noise [code: VILA-Lab/SRe2L `SRe2L/recover/` — ``torch.randn`` in normalised space].

Real-patch pool, per class ``c``:

1. sample ``mipc`` training images of class ``c`` (all if fewer), seeded;
2. draw ``num_crop`` ``RandomResizedCrop(D, scale=crop_scale, ratio=(1, 1))`` boxes per image (antialiased resize;
   ``crop_scale`` (0.08, 1) as in RDED/FADRM; (1, 1) keeps whole images — a teacher-ranked real subset);
3. score each crop by the teacher's CE ``−log softmax(f(crop))_c`` (eval mode, no grad); with ``pad_to`` the crop
   (rendered at ``size`` < ``pad_to``) is zero-padded, centred, to ``pad_to`` in normalised space before scoring
   (RDED's factor-2 scoring, docs/methods.md §12.1);
4. keep the lowest-CE crop per image and rank the images by it, ascending (rank 0 = easiest): :func:`rank_crops`.

The pool stores only (source index, box, score) per entry — a few bytes — and renders pixels on demand, so it is
cheap to cache and scales to large datasets. RETA's DRC pool is the same ranked list (docs/methods.md §4.1).
Slot ``k`` of class ``c`` takes rank ``start + k`` of its class, where the band sets ``start``: ``easy`` 0,
``medium`` the middle of the ranking, ``hard`` the end [recon]; ``spread`` takes evenly spaced ranks over the whole
pool (a diversity lever, docs/methods.md §10) [recon].
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn

from reta.data.augment import normalize, rrc_boxes
from reta.data.registry import class_index
from reta.errors import RetaError
from reta.synthesis.runtime import resample
from reta.utils.config import config_digest
from reta.utils.io import atomic_torch_save

log = logging.getLogger(__name__)

BANDS = ("easy", "medium", "hard", "spread")
POOL_FORMAT = 1


@dataclass
class PatchPool:
    """Ranked teacher-scored crops per class: ``source[c]`` train indices, ``boxes[c]`` (top, left, h, w), ``scores[c]``
    CE ascending. Pixels are rendered from the dataset on demand at resolution ``size``."""

    source: list[torch.Tensor]
    boxes: list[torch.Tensor]
    scores: list[torch.Tensor]
    size: int

    def __len__(self) -> int:
        return len(self.source)

    def class_size(self, c: int) -> int:
        return int(self.source[c].numel())

    def render(self, dataset, c: int, ranks: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Pixel-space crops ``[n, C, size, size]`` in [0, 1] of class ``c`` at the given ranks (all if None)."""
        ranks = torch.arange(self.class_size(c)) if ranks is None else torch.as_tensor(ranks, dtype=torch.long)
        images = dataset.gather(self.source[c][ranks])
        return torch.stack([_crop(img, box, self.size) for img, box in zip(images, self.boxes[c][ranks].tolist())])

    def state(self) -> dict:
        return {"source": self.source, "boxes": self.boxes, "scores": self.scores, "size": self.size}


def _crop(img: torch.Tensor, box: Sequence[int], size: int) -> torch.Tensor:
    top, left, h, w = (int(v) for v in box)
    return TF.resized_crop(img, top, left, h, w, [size, size], antialias=True).clamp_(0.0, 1.0)


def rank_crops(ce: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RDED's selection [code: LINs-lab/RDED `synthesize/main.py`]: ``ce`` ``[n_images, num_crop]`` → (``order``
    of the images by their best crop's CE, ascending; ``best`` crop index per image; ``best_ce`` per image). One
    crop per source image, so every rank comes from a distinct image."""
    best_ce, best = ce.min(dim=1)
    return torch.argsort(best_ce, stable=True), best, best_ce


def _pad_centre(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or x.shape[-1] == size:
        return x
    top, left = (size - x.shape[-2]) // 2, (size - x.shape[-1]) // 2
    return F.pad(x, (left, size - x.shape[-1] - left, top, size - x.shape[-2] - top))


@torch.no_grad()
def build_patch_pool(
    dataset, teacher: nn.Module, mean, std, num_classes: int, size: int, mipc: int, num_crop: int, seed: int,
    crop_scale: Sequence[float] = (0.08, 1.0), batch_size: int = 500, pad_to: int | None = None,
) -> PatchPool:
    """Score ``num_crop`` square RRC crops of ``mipc`` images per class with ``teacher``; see module docstring."""
    if mipc <= 0 or num_crop <= 0:
        raise RetaError(f"init: mipc ({mipc}) and num_crop ({num_crop}) must be positive")
    lo, hi = (float(v) for v in crop_scale)
    if not 0 < lo <= hi <= 1:
        raise RetaError(f"init: crop_scale must be [lo, hi] with 0 < lo <= hi <= 1, got {list(crop_scale)}")
    teacher.eval()
    device = next(teacher.parameters()).device
    gen = torch.Generator().manual_seed(int(seed) + 4099)
    groups = class_index(dataset.targets, num_classes)
    source, boxes, scores = [], [], []
    for c, idx in enumerate(groups):
        if idx.numel() == 0:
            raise RetaError(f"init: class {c} has no training images to take patches from")
        pick = idx[torch.randperm(idx.numel(), generator=gen)[: min(mipc, idx.numel())]]
        images = dataset.gather(pick)
        _, _, h, w = images.shape
        xywh = rrc_boxes(pick.numel() * num_crop, h, w, (lo, hi), (1.0, 1.0), gen).long()
        cand = torch.stack([xywh[:, 1], xywh[:, 0], xywh[:, 3], xywh[:, 2]], 1)  # (top, left, h, w)
        crops = torch.stack([_crop(images[i // num_crop], b, size) for i, b in enumerate(cand.tolist())])
        ce = torch.cat([
            F.cross_entropy(
                teacher(_pad_centre(normalize(crops[s : s + batch_size].to(device), mean, std), pad_to)).float(),
                torch.full((min(batch_size, len(crops) - s),), c, device=device),
                reduction="none",
            ).cpu()
            for s in range(0, len(crops), batch_size)
        ]).view(pick.numel(), num_crop)
        order, best, best_ce = rank_crops(ce)
        source.append(pick[order].clone())
        boxes.append(cand.view(pick.numel(), num_crop, 4)[torch.arange(pick.numel()), best][order].clone())
        scores.append(best_ce[order].clone())
    return PatchPool(source, boxes, scores, size)


def pool_key(dataset_name: str, teacher_id: str, size: int, mipc: int, num_crop: int, seed: int, crop_scale,
             pad_to: int | None = None) -> str:
    fields = [POOL_FORMAT, dataset_name, teacher_id, size, mipc, num_crop, seed, [float(v) for v in crop_scale]]
    return config_digest(fields if pad_to is None else [*fields, int(pad_to)])


def cached_patch_pool(cache_dir: str | Path | None, dataset_name: str, teacher_id: str, **kwargs) -> PatchPool:
    """:func:`build_patch_pool` memoised under ``<cache_dir>/patch_pools/`` (keyed by dataset, teacher, size,
    mipc, num_crop, seed, crop scale, padding); ``cache_dir=None`` disables the cache."""
    key = pool_key(dataset_name, teacher_id, kwargs["size"], kwargs["mipc"], kwargs["num_crop"], kwargs["seed"],
                   kwargs.get("crop_scale", (0.08, 1.0)), kwargs.get("pad_to"))
    path = Path(cache_dir) / "patch_pools" / f"{dataset_name}_{key}.pt" if cache_dir else None
    if path is not None and path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            log.info("patch pool from cache: %s", path)
            return PatchPool(**state)
        except Exception as err:  # noqa: BLE001 - a corrupt cache entry is rebuilt
            log.warning("patch pool cache %s unreadable (%s); rebuilding", path, type(err).__name__)
    pool = build_patch_pool(**kwargs)
    if path is not None:
        atomic_torch_save(pool.state(), path)
    return pool


def band_ranks(pool_size: int, ipc: int, band: str) -> list[int]:
    """Pool ranks of slots ``0 … ipc−1`` for ``band`` (see module docstring)."""
    if band not in BANDS:
        raise RetaError(f"init: unknown band {band!r}; valid: {', '.join(BANDS)}")
    if ipc > pool_size:
        raise RetaError(f"init: ipc={ipc} needs {ipc} patches per class but the pool holds {pool_size} (raise mipc)")
    if band == "spread":
        return torch.linspace(0, pool_size - 1, ipc).round().long().tolist() if ipc > 1 else [pool_size // 2]
    start = {"easy": 0, "medium": (pool_size - ipc) // 2, "hard": pool_size - ipc}[band]
    return list(range(start, start + ipc))


class PatchBank:
    """The fixed real patch of every (class, slot): pixel space ``[num_classes, ipc, C, D, D]``, rendered once."""

    def __init__(self, pool: PatchPool, dataset, ipc: int, band: str) -> None:
        self.pool, self.band = pool, band
        self.ranks = [band_ranks(pool.class_size(c), ipc, band) for c in range(len(pool))]
        self.patches = torch.stack([pool.render(dataset, c, r) for c, r in enumerate(self.ranks)])

    def get(self, classes: Sequence[int] | torch.Tensor, slot: int) -> torch.Tensor:
        """Pixel-space patches ``[B, C, D, D]`` of ``slot`` for each class in ``classes``."""
        return self.patches[torch.as_tensor(classes, dtype=torch.long), int(slot)]

    def describe(self) -> dict:
        return {"band": self.band, "ranks": self.ranks}


class NoiseInit:
    """SRe2L: ``x ~ N(0, 1)`` in normalised space at the first stage's resolution."""

    kind = "noise"

    def __call__(self, classes, slot: int, size: int, channels: int, mean, std, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(len(classes), channels, size, size, generator=gen)


class PatchInit:
    """FADRM: the (class, slot) patch of ``bank``, normalised and resampled to the first stage's resolution."""

    kind = "patch"

    def __init__(self, bank: PatchBank) -> None:
        self.bank = bank

    def __call__(self, classes, slot: int, size: int, channels: int, mean, std, gen: torch.Generator) -> torch.Tensor:
        return resample(normalize(self.bank.get(classes, slot), mean, std), size)


def teacher_id(meta: Mapping) -> str:
    """A stable id of a teacher checkpoint for cache keys (checkpoint hash, else cache key, else name)."""
    return str(meta.get("checkpoint_sha256") or meta.get("key") or meta.get("name"))

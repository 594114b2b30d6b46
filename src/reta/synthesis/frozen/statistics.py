"""SFM's real statistics, computed once per (backbone, dataset) and cached beside the backbone.

One pass of the frozen backbone over the training split (no augmentation: the prototype found clean statistics better
than augmented ones), float64 sums per class and class counts — the same statistics XinbaoQiao/pFRF
``src/distillation/precompute.py`` stores. The target flows F*_c = μ̄_¬c − μ_c follow from them
(:func:`reta.synthesis.frozen.losses.flows_from_sums`). The file ``sfm_stats_<n>.pt`` lives in the backbone's cache
entry, so it is keyed by the backbone (weights + dataset) and the training-split size; a second run loads it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from reta.data.base import ImageDataset
from reta.training.backbone import FrozenBackbone
from reta.utils.cache_files import read_tensors
from reta.utils.io import atomic_torch_save

log = logging.getLogger(__name__)


@dataclass
class RealStatistics:
    sums: torch.Tensor  # float64 [C, d]
    counts: torch.Tensor  # float64 [C]
    from_cache: bool


@torch.no_grad()
def real_statistics(
    backbone: FrozenBackbone, train: ImageDataset, num_classes: int, batch_size: int = 500
) -> RealStatistics:
    """Per-class float64 feature sums and counts of ``train`` under ``backbone`` — loaded from the cache when there."""
    path = backbone.entry / f"sfm_stats_{len(train)}.pt" if backbone.entry is not None else None
    if path is not None and path.is_file():
        st = read_tensors(path, lambda o: isinstance(o, dict) and isinstance(o.get("sums"), torch.Tensor)
                          and isinstance(o.get("counts"), torch.Tensor)
                          and tuple(o["sums"].shape) == (num_classes, backbone.dim)
                          and tuple(o["counts"].shape) == (num_classes,))
        log.info("SFM real statistics from cache: %s", path)
        return RealStatistics(st["sums"], st["counts"], True)
    sums = torch.zeros(num_classes, backbone.dim, dtype=torch.float64)
    y_all = train.targets.long()
    for start in range(0, len(train), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(train)))
        z = backbone.embed(train.gather(idx), batch_size=batch_size, dtype=torch.float64)
        sums.index_add_(0, y_all[idx], z)
    counts = torch.bincount(y_all, minlength=num_classes).to(torch.float64)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"sums": sums, "counts": counts, "backbone_key": backbone.key}, path)
    return RealStatistics(sums, counts, False)

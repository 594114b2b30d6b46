"""The real feature pool RETA's two parts share: DRC retrieves anchors from it, PTA builds its real targets from it.

Source: RETA, arXiv 2602.24144 (pool of teacher-scored real crops, features in the teacher's penultimate space) — see
``docs/methods.md`` (RETA, DRC). Per class ``c``: the ranked teacher-scored crops of the real-patch initialisation
(:class:`reta.synthesis.bn.init.PatchPool`, one lowest-CE crop per sampled real image), optionally thinned to
``pool_size`` evenly spaced ranks. Per entry, computed once per class on first use and kept in memory: ``z`` =
L2-normalised penultimate features of the reference teacher at the native resolution, and the raw complexity ``c`` of
the crop resampled to every merge resolution. Pixels are rendered on demand (features only: P × d floats per class).
One pool per (module, teacher, pool_size) is shared by the DRC provider and the PTA callback
(:func:`shared_feature_pool`).

**Disk cache.** With ``cache_dir`` (the synthesis sets ``module.feature_pool_cache`` to
``<paths.cache_dir>/feature_pools``) each class's features and complexities are also written once to
``<cache_dir>/<id>/class_<c>.pt`` and read back by later runs, so only the first RETA run on a (teacher, patch pool)
pays the feature pass; ``id`` hashes the feature teacher's id, the patch pool's sources and boxes, the training
view's tag and ``pool_size``. Reads are weights-only; an unreadable entry is recomputed.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from reta.data.augment import normalize
from reta.errors import RetaError
from reta.synthesis.reta.retrieval import image_complexity
from reta.synthesis.runtime import resample
from reta.utils.io import atomic_torch_save

log = logging.getLogger(__name__)


def pool_ranks(class_size: int, pool_size: int | None) -> torch.Tensor:
    """Ranks of the class's ranked patch list that form the pool: all (``None``) or ``pool_size`` evenly spaced
    ranks over the whole ranking (keeps the spread of teacher CE), capped at the class size."""
    if pool_size is None or int(pool_size) >= class_size:
        return torch.arange(class_size)
    if int(pool_size) < 1:
        raise RetaError(f"pool_size must be a positive integer or null, got {pool_size!r}")
    return torch.linspace(0, class_size - 1, int(pool_size)).round().long().unique()


class FeaturePool:
    """Per-class real pool with cached L2-normalised teacher features and complexity per resolution (see module
    docstring). ``patch_pool``/``dataset`` render the crops; ``embed(x)`` maps normalised images to features."""

    def __init__(
        self,
        patch_pool,
        dataset,
        embed,
        mean: Sequence[float],
        std: Sequence[float],
        pool_size: int | None = None,
        batch_size: int = 256,
        device: torch.device | str = "cpu",
        cache_dir: str | Path | None = None,
    ) -> None:
        if patch_pool is None or dataset is None:
            raise RetaError("the RETA pool needs the real-patch pool and the training set (init.kind=patch, or a "
                            "residual provider that needs the pool)")
        self.patch_pool, self.dataset, self.embed = patch_pool, dataset, embed
        self.mean, self.std = list(mean), list(std)
        self.pool_size, self.batch_size, self.device = pool_size, int(batch_size), torch.device(device)
        self.size = int(patch_pool.size)
        self._ranks: dict[int, torch.Tensor] = {}
        self._feats: dict[int, torch.Tensor] = {}
        self._complexity: dict[tuple, torch.Tensor] = {}
        #: (size, sigma, gradient) complexities computed together with the features (one rendering per class)
        self.complexity_specs: set[tuple[int, float, str]] = set()
        self.cache_dir = None if cache_dir is None else Path(cache_dir)

    def ranks(self, c: int) -> torch.Tensor:
        """Pool entry ``i`` of class ``c`` is rank ``ranks(c)[i]`` of the class's ranked patch list."""
        if c not in self._ranks:
            self._ranks[c] = pool_ranks(self.patch_pool.class_size(c), self.pool_size)
        return self._ranks[c]

    def class_size(self, c: int) -> int:
        return int(self.ranks(c).numel())

    def sources(self, c: int) -> torch.Tensor:
        """Training-set indices of the pool entries of class ``c``."""
        return self.patch_pool.source[c][self.ranks(c)]

    def render(self, c: int, index: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Pixel-space crops ``[n, C, D, D]`` in [0, 1] of pool entries ``index`` (all if None)."""
        ranks = self.ranks(c) if index is None else self.ranks(c)[torch.as_tensor(index, dtype=torch.long)]
        return self.patch_pool.render(self.dataset, c, ranks)

    def _cache_file(self, c: int) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"class_{c}.pt"

    def _load_cached(self, c: int) -> None:
        path = self._cache_file(c)
        if path is None or not path.is_file() or c in self._feats:
            return
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state["feats"].shape[0] != self.class_size(c):
                raise ValueError("pool size mismatch")
        except Exception as err:  # noqa: BLE001 - a corrupt or stale entry is recomputed
            log.warning("feature pool cache %s unreadable (%s); recomputing", path, type(err).__name__)
            return
        self._feats[c] = state["feats"]
        for key, value in state["complexity"].items():
            size, sigma, gradient = key.split("|")
            self._complexity[c, int(size), float(sigma), gradient] = value

    def _save_cached(self, c: int) -> None:
        path = self._cache_file(c)
        if path is None:
            return
        cx = {f"{size}|{sigma}|{gradient}": v for (k, size, sigma, gradient), v in self._complexity.items() if k == c}
        atomic_torch_save({"feats": self._feats[c], "complexity": cx}, path)

    @torch.no_grad()
    def _build(self, c: int, specs: set[tuple[int, float, str]]) -> None:
        self._load_cached(c)
        missing = [sp for sp in specs if (c, *sp) not in self._complexity]
        if c in self._feats and not missing:
            return
        crops = self.render(c)
        if c not in self._feats:
            feats = []
            for s in range(0, len(crops), self.batch_size):
                x = normalize(crops[s : s + self.batch_size].to(self.device), self.mean, self.std)
                feats.append(F.normalize(self.embed(x).float().flatten(1), dim=1).cpu())
            self._feats[c] = torch.cat(feats)
        for size, sigma, gradient in specs:
            if (c, size, sigma, gradient) not in self._complexity:
                self._complexity[c, size, sigma, gradient] = image_complexity(
                    resample(crops, size).clamp(0.0, 1.0), sigma, gradient
                ).double()
        self._save_cached(c)

    def features(self, c: int) -> torch.Tensor:
        """``[P_c, d]`` L2-normalised float32 features (CPU) of class ``c``'s pool, computed on first use."""
        if c not in self._feats:
            self._build(c, set(self.complexity_specs))
        return self._feats[c]

    def complexity(self, c: int, size: int, sigma: float = 1.0, gradient: str = "central") -> torch.Tensor:
        """Raw complexity ``c(o)`` ``[P_c]`` (float64, CPU) of the pool crops resampled to ``size``."""
        key = (c, int(size), float(sigma), gradient)
        if key not in self._complexity:
            self._build(c, set(self.complexity_specs) | {key[1:]})
        return self._complexity[key]


_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared_feature_pool(module, feature_teacher: int = 0, pool_size: int | None = None,
                        batch_size: int = 256) -> FeaturePool:
    """The :class:`FeaturePool` of a synthesis module for (feature teacher, pool_size), created on first request and
    shared by every caller (DRC provider, PTA callback) of the same module."""
    if not 0 <= int(feature_teacher) < len(module.teachers):
        raise RetaError(f"feature_teacher={feature_teacher} but the synthesis has {len(module.teachers)} teacher(s)")
    key = (int(feature_teacher), None if pool_size is None else int(pool_size))
    pools = _POOLS.setdefault(module, {})
    if key not in pools:
        slot = module.teachers[int(feature_teacher)]
        tensor = next(iter([*slot.model.parameters(), *slot.model.buffers()]), None)
        device = tensor.device if tensor is not None else torch.device("cpu")

        def embed(x: torch.Tensor) -> torch.Tensor:
            return module.teacher_features(x, int(feature_teacher))

        pools[key] = FeaturePool(module.patch_pool, module.train_set, embed, module.mean, module.std, pool_size,
                                 batch_size, device, _cache_dir(module, slot, pool_size))
    return pools[key]


def _cache_dir(module, slot, pool_size: int | None) -> Path | None:
    """``<module.feature_pool_cache>/<id>`` for this (feature teacher, patch pool, training view, pool_size), or
    ``None`` when the module has no cache root."""
    root = getattr(module, "feature_pool_cache", None)
    if root is None:
        return None
    meta = getattr(slot, "meta", None) or {}
    teacher = str(meta.get("checkpoint_sha256") or meta.get("key") or meta.get("name") or "")
    if not teacher:
        return None  # an anonymous teacher has no stable id: no cache
    h = hashlib.sha256()
    pool = module.patch_pool
    for part in (teacher, str(getattr(module.train_set, "tag", "")), str(pool_size), str(pool.size)):
        h.update(part.encode() + b"\0")
    for src, box in zip(pool.source, pool.boxes, strict=True):
        h.update(src.to(torch.int64).numpy().tobytes())
        h.update(torch.as_tensor(box).to(torch.int64).numpy().tobytes())
    return Path(root) / h.hexdigest()[:16]

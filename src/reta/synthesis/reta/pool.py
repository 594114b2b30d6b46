"""The real feature pool RETA's two parts share: DRC retrieves anchors from it, PTA builds its real targets from it.

Source: RETA, arXiv 2602.24144 (pool of teacher-scored real crops, features in the teacher's penultimate space) — see
``docs/methods.md`` (RETA, DRC). Per class ``c``: the ranked teacher-scored crops of the real-patch initialisation
(:class:`reta.synthesis.bn.init.PatchPool`, one lowest-CE crop per sampled real image), optionally thinned to
``pool_size`` evenly spaced ranks. Per entry, computed once per class on first use and kept in memory: ``z`` =
L2-normalised penultimate features of the reference teacher at the native resolution, and the raw complexity ``c`` of
the crop resampled to every merge resolution. Pixels are rendered on demand (features only: P × d floats per class).
One pool per (module, teacher, pool_size) is shared by the DRC provider and the PTA callback
(:func:`shared_feature_pool`).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from reta.data.augment import normalize
from reta.errors import RetaError
from reta.synthesis.bn.init import resample
from reta.synthesis.reta.retrieval import image_complexity


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

    @torch.no_grad()
    def _build(self, c: int, specs: set[tuple[int, float, str]]) -> None:
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
                                 batch_size, device)
    return pools[key]

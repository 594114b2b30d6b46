"""Persistent Topology Alignment (PTA) loss between synthetic and size-matched real point clouds.

Source: docs/methods.md §4.2 "PTA: the loss" and the edge-behaviour table; RETA (arXiv 2602.24144) for
the loss form, the reduction and the size-matched real target are [recon] there.

    L_topo = (1/|C|) Σ_c ( ‖PI⁰(Z_c^syn) − PI⁰_real,c‖²_F + γ·‖PI¹(Z_c^syn) − PI¹_real,c‖²_F )

* Real target, size-matched: M random subsets of size n_s (the synthetic cloud size) of the class's
  real pool features; the target is the mean of their persistence images. PIs are linear in the
  bars, so the mean equals the image of all M subsets' bars with multiplicity 1/M — which is what
  :class:`RealTarget` stores (detached), so that the image can be redrawn for any cutoff κ.
* Cutoff κ per class, detached: ``joint`` = max(longest edge of the class's real-subset graphs,
  longest edge of its synthetic graph); ``real``; or a fixed float. The real images are drawn once
  at the real-only cutoff and redrawn from the stored bars only for classes whose κ differs.
* Edge behaviour: a cloud with n_s = 1 has no edge and contributes nothing (if no cloud has ≥ 2
  points the loss is a constant 0 without gradient; the caller warns); n_s ≤ 3 → H0 only (no loop
  survives in < 4 points); k ≥ n → complete graph; duplicate points keep finite gradients (ε in the
  edge length).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from reta.topology.diagrams import (
    MIN_POINTS_FOR_H1,
    PaddedBars,
    pairing_bars,
    persistence_pairings,
    resolve_cutoff,
    union_bars,
)
from reta.topology.graph import mutual_knn_graphs, mutual_knn_graphs_from_sq_distances, pairwise_sq_distances
from reta.topology.images import KERNELS, persistence_images

REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class TopologyConfig:
    """Hyper-parameters of PTA — the one place their defaults live (docs/methods.md §4.3); the PTA callback, the
    loss and the diagnostics all build from it."""

    k: int = 10
    grid: int = 32
    sigma: float = 0.05
    gamma: float = 1.0
    power: float = 1.0
    cutoff: str | float = "joint"
    kernel: str = "integrated"
    reduction: str = "mean"
    squared: bool = False
    num_subsets: int = 16

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.num_subsets < 1:
            raise ValueError(f"num_subsets must be >= 1, got {self.num_subsets}")
        if self.kernel not in KERNELS:
            raise ValueError(f"unknown kernel {self.kernel!r}; expected one of {KERNELS}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {self.reduction!r}; expected one of {REDUCTIONS}")
        if isinstance(self.cutoff, str) and self.cutoff not in ("joint", "real"):
            raise ValueError(f"unknown cutoff policy {self.cutoff!r}; expected 'joint', 'real' or a float")
        if self.power < 1 or self.sigma <= 0 or self.grid < 1 or self.gamma < 0:
            raise ValueError("need power >= 1, sigma > 0, grid >= 1, gamma >= 0")


@dataclass(frozen=True)
class RealTarget:
    """Size-matched real target of one class: pooled bars of M subsets (multiplicity 1/M), detached.

    ``h0``/``h1`` are ``(births, deaths, multiplicity)`` float64 CPU tensors, deaths +inf for
    essential bars; ``longest_edge`` is the longest edge over the M subset graphs. ``images`` is the
    (PI⁰, PI¹) pair ``[G, G]`` drawn at ``image_cutoff`` (the fixed cutoff, or the real longest
    edge for ``real``/``joint``); the loss reuses it whenever the class's κ equals that value and
    redraws the image from the bars otherwise (``joint`` with a longer synthetic edge).
    """

    subset_size: int
    longest_edge: float
    h0: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    h1: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    config: TopologyConfig
    image_cutoff: float
    images: tuple[torch.Tensor, torch.Tensor]


def _pad_targets(parts: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> PaddedBars:
    width = max((len(p[0]) for p in parts), default=0)
    out = []
    for field in range(3):
        rows = [torch.nn.functional.pad(p[field], (0, width - len(p[field]))) for p in parts]
        out.append(torch.stack(rows) if rows else torch.zeros((0, width), dtype=torch.float64))
    return PaddedBars(*out)


def _images(bars: PaddedBars, kappa: torch.Tensor, config: TopologyConfig) -> torch.Tensor:
    return persistence_images(
        bars.births,
        bars.deaths,
        kappa,
        bars.multiplicity,
        config.grid,
        config.sigma,
        config.power,
        config.kernel,
    )


def _pool_sq_distances(pools: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Squared-distance matrix of every pool, batched over pools of equal size."""
    out: list[torch.Tensor] = [None] * len(pools)  # type: ignore[list-item]
    by_size: dict[int, list[int]] = {}
    for i, pool in enumerate(pools):
        by_size.setdefault(int(pool.shape[0]), []).append(i)
    for members in by_size.values():
        sq = pairwise_sq_distances(torch.stack([pools[i].detach().cpu() for i in members]))
        for slot, i in enumerate(members):
            out[i] = sq[slot]
    return out


def build_real_targets(
    pools: Sequence[torch.Tensor], subset_size: int, config: TopologyConfig, generator: torch.Generator
) -> list[RealTarget]:
    """Size-matched real targets for several classes in one combinatorial call.

    ``pools[c]`` is the class's real feature pool ``[P_c, d]``; M = ``config.num_subsets`` subsets
    of ``subset_size`` distinct points are drawn per class with ``generator`` (CPU).
    """
    if subset_size < 2:
        raise ValueError(f"a real target needs subsets of >= 2 points, got {subset_size}")
    m = config.num_subsets
    blocks: list[torch.Tensor] = []  # squared distances of every subset: sub-blocks of the pool's matrix
    for c, pool in enumerate(pools):
        if pool.dim() != 2 or pool.shape[0] < subset_size:
            raise ValueError(f"pool {c} has shape {tuple(pool.shape)}; need [P >= {subset_size}, d]")
    # the M subsets need M·n² distances; the whole pool matrix (P² of them) pays off only for small pools
    small = [c for c, pool in enumerate(pools) if pool.shape[0] ** 2 <= m * subset_size**2]
    pool_sq = dict(zip(small, _pool_sq_distances([pools[c] for c in small]))) if small else {}
    for c, pool in enumerate(pools):
        picks = [torch.randperm(pool.shape[0], generator=generator)[:subset_size] for _ in range(m)]
        if c in pool_sq:
            blocks.extend(pool_sq[c][idx][:, idx] for idx in picks)
        else:
            blocks.extend(pairwise_sq_distances(torch.stack([pool.detach().cpu()[idx] for idx in picks])))
    graph = mutual_knn_graphs_from_sq_distances(blocks, config.k, config.squared)
    pairing = persistence_pairings(graph, with_h1=subset_size >= MIN_POINTS_FOR_H1)
    h0, h1 = pairing_bars(pairing, np.repeat(np.arange(len(pools)), m), len(pools), 1.0 / m)
    longest = graph.longest_edge().reshape(len(pools), m).max(axis=1)
    real_longest = torch.as_tensor(longest, dtype=torch.float64)
    policy = "real" if config.cutoff == "joint" else config.cutoff
    kappa = resolve_cutoff(policy, real_longest, real_longest)
    pi0, pi1 = _images(h0, kappa, config), _images(h1, kappa, config)
    return [
        RealTarget(
            subset_size=subset_size,
            longest_edge=float(longest[c]),
            h0=h0.group(c),
            h1=h1.group(c),
            config=config,
            image_cutoff=float(kappa[c]),
            images=(pi0[c], pi1[c]),
        )
        for c in range(len(pools))
    ]


def _real_images(
    targets: Sequence[RealTarget], kappa: torch.Tensor, config: TopologyConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Real (PI⁰, PI¹) ``[C, G, G]`` at the classes' cutoffs ``kappa``, float64 on the CPU."""
    kappa64 = kappa.detach().to("cpu", torch.float64)
    pi0 = torch.stack([t.images[0] for t in targets])
    pi1 = torch.stack([t.images[1] for t in targets])
    stale = [c for c, t in enumerate(targets) if t.image_cutoff != float(kappa64[c])]
    if stale:
        idx = torch.as_tensor(stale)
        pi0[idx] = _images(_pad_targets([targets[c].h0 for c in stale]), kappa64[idx], config)
        pi1[idx] = _images(_pad_targets([targets[c].h1 for c in stale]), kappa64[idx], config)
    return pi0, pi1


def _check_targets(
    clouds: Sequence[torch.Tensor], targets: Sequence[RealTarget | None], config: TopologyConfig
) -> None:
    for c, (cloud, target) in enumerate(zip(clouds, targets)):
        if target is None:
            raise ValueError(f"class {c}: no real target for a cloud of {cloud.shape[0]} points")
        if target.subset_size != cloud.shape[0]:
            raise ValueError(
                f"class {c}: real target is size-matched to {target.subset_size} points, "
                f"synthetic cloud has {cloud.shape[0]}"
            )
        if target.config != config:
            raise ValueError(f"class {c}: real target was built with a different TopologyConfig")


def per_class_topology_loss(
    syn_clouds: Sequence[torch.Tensor], targets: Sequence[RealTarget | None], config: TopologyConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class ‖ΔPI⁰‖²_F + γ‖ΔPI¹‖²_F ``[C]`` and the mask ``[C]`` of classes that count (n_s ≥ 2).

    ``syn_clouds[c]`` is ``[n_s, d]`` (with gradient); ``targets[c]`` its size-matched real target
    (may be None for clouds with one point). Skipped classes have value 0 without gradient.
    """
    if len(syn_clouds) != len(targets):
        raise ValueError(f"{len(syn_clouds)} synthetic clouds but {len(targets)} targets")
    if len(syn_clouds) == 0:
        raise ValueError("need at least one synthetic cloud")
    ref = syn_clouds[0]
    sizes = [int(z.shape[0]) for z in syn_clouds]
    active = [c for c, n in enumerate(sizes) if n >= 2]
    mask = torch.tensor([n >= 2 for n in sizes], device=ref.device)
    values = torch.zeros(len(syn_clouds), dtype=ref.dtype, device=ref.device)
    if not active:
        return values, mask
    clouds = [syn_clouds[c] for c in active]
    act_targets = [targets[c] for c in active]
    _check_targets(clouds, act_targets, config)
    graph = mutual_knn_graphs(clouds, config.k, config.squared)
    h1_classes = torch.tensor([z.shape[0] >= MIN_POINTS_FOR_H1 for z in clouds], device=ref.device)
    with_h1 = bool(h1_classes.any())
    pairing = persistence_pairings(graph, with_h1=with_h1)
    h0, h1 = union_bars(torch.cat(clouds), pairing, np.arange(len(clouds)), len(clouds), 1.0, config.squared)
    syn_longest = torch.as_tensor(graph.longest_edge(), dtype=torch.float64)
    real_longest = torch.tensor([t.longest_edge for t in act_targets], dtype=torch.float64)
    kappa = resolve_cutoff(config.cutoff, real_longest, syn_longest)
    real0, real1 = _real_images(act_targets, kappa, config)
    kappa = kappa.to(ref.device, ref.dtype)
    loss = ((_images(h0, kappa, config) - real0.to(ref)) ** 2).sum((1, 2))
    if with_h1:
        d1 = ((_images(h1, kappa, config) - real1.to(ref)) ** 2).sum((1, 2))
        loss = loss + config.gamma * torch.where(h1_classes, d1, torch.zeros_like(d1))
    index = torch.as_tensor(active, device=ref.device)
    return values.index_put((index,), loss), mask


def topology_loss(
    syn_clouds: Sequence[torch.Tensor], targets: Sequence[RealTarget | None], config: TopologyConfig
) -> torch.Tensor:
    """L_topo: mean (or sum, ``config.reduction``) of the per-class losses over classes with n_s ≥ 2.

    Returns a constant 0 without gradient when no cloud has ≥ 2 points (PTA is off; the caller warns).
    """
    values, mask = per_class_topology_loss(syn_clouds, targets, config)
    if not bool(mask.any()):
        return values.new_zeros(())
    total = values[mask].sum()
    return total / int(mask.sum()) if config.reduction == "mean" else total


class TopologyLoss(nn.Module):
    """PTA loss with a per-class cache of size-matched real targets.

    ``cache_real_targets`` (re)draws the targets (call it at every synthetic-cache refresh);
    ``forward`` uses the cache, or recomputes targets from ``real_pools`` when they are given.
    Subsets are drawn from a CPU generator seeded with ``seed`` and advanced by every draw.
    """

    def __init__(self, config: TopologyConfig | None = None, seed: int = 0, **topology) -> None:
        """``config``, or its fields as keyword arguments (``TopologyLoss(k=3, grid=8)``; defaults: the one set in
        :class:`TopologyConfig`); an unknown keyword raises ``TypeError``."""
        super().__init__()
        self.config = config if config is not None else TopologyConfig(**topology)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self._targets: dict[int, RealTarget] = {}

    def build_targets(
        self, pools: Mapping[int, torch.Tensor], subset_size: int, generator: torch.Generator | None = None
    ) -> dict[int, RealTarget]:
        """Size-matched real targets for the classes in ``pools`` (class id → ``[P, d]`` features), drawn with
        ``generator`` (default: the loss's own, advanced by the draw); not cached."""
        ids = list(pools)
        built = build_real_targets([pools[i] for i in ids], subset_size, self.config, generator or self.generator)
        return dict(zip(ids, built))

    def cache_real_targets(self, pools: Mapping[int, torch.Tensor], subset_size: int) -> None:
        """Draw and cache real targets for the classes in ``pools`` (class id → ``[P, d]`` features)."""
        self._targets.update(self.build_targets(pools, subset_size))

    def set_real_target(self, class_id: int, target: RealTarget) -> None:
        """Cache a target built elsewhere (e.g. once per run by the PTA callback) for ``class_id``."""
        if target.config != self.config:
            raise ValueError(f"class {class_id}: real target was built with a different TopologyConfig")
        self._targets[int(class_id)] = target

    def cached_target(self, class_id: int) -> RealTarget:
        if class_id not in self._targets:
            raise KeyError(f"no cached real target for class {class_id}; call cache_real_targets first")
        return self._targets[class_id]

    def clear_cache(self) -> None:
        self._targets.clear()

    def forward(
        self,
        syn_clouds: Sequence[torch.Tensor],
        class_ids: Sequence[int],
        real_pools: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """L_topo for ``syn_clouds[i]`` of class ``class_ids[i]`` (cached targets unless ``real_pools``)."""
        if len(syn_clouds) != len(class_ids):
            raise ValueError(f"{len(syn_clouds)} clouds but {len(class_ids)} class ids")
        live = [i for i, z in enumerate(syn_clouds) if z.shape[0] >= 2]
        targets: list[RealTarget | None] = [None] * len(syn_clouds)
        if real_pools is not None:
            if len(real_pools) != len(syn_clouds):
                raise ValueError(f"{len(syn_clouds)} clouds but {len(real_pools)} real pools")
            by_size: dict[int, list[int]] = {}
            for i in live:
                by_size.setdefault(int(syn_clouds[i].shape[0]), []).append(i)
            for n, members in by_size.items():
                built = build_real_targets(  # one union call per cloud size
                    [real_pools[i] for i in members], n, self.config, self.generator
                )
                for i, t in zip(members, built):
                    targets[i] = t
        else:
            for i in live:
                targets[i] = self.cached_target(int(class_ids[i]))
        return topology_loss(syn_clouds, targets, self.config)

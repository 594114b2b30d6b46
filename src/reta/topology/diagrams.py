"""Persistence diagrams with critical edges, and their differentiable re-evaluation.

Source: docs/methods.md §4.2 "Diagrams with critical edges" and "Differentiability", §4.4 library facts.

Combinatorial step (detached, one call for the disjoint union of all clouds' graphs):

* **H0** by Kruskal: finite deaths are the edges of a minimum spanning forest, births 0. scipy's
  ``minimum_spanning_tree`` treats explicit zeros as missing edges (a duplicate point would become a
  spurious component), so it runs on ``w + 1`` — the MST is invariant under monotone maps — and
  the true weights are read back from the graph. Each cloud's components are essential H0 bars;
  one per cloud (the global component, identical for real and synthetic) is dropped, the others are
  counted as ``extra_components``.
* **H1** from gudhi: the sparse graph is inserted into a ``SimplexTree`` (vertices at 0), expanded
  to the flag complex of dimension 2 (a triangle enters at its longest edge), and
  ``flag_persistence_generators()`` gives finite bars as (birth edge, death edge) and essential bars
  as a birth edge. Gudhi gotchas handled: ``homology_coeff_field=2`` (ripser's field),
  ``min_persistence=-1`` (keep zero-length pairs), ``persistence_dim_max=True`` when the complex has
  no triangle (otherwise H1 is skipped), empty *lists* instead of ``(0, 4)`` arrays.

Differentiable step ("pairing as lookup"): every birth/death is the length of its critical edge,
ℓ = sqrt(‖z_u − z_v‖² + ε), ε = 1e-12, by explicit differences, so gradients reach the points.
Essential deaths are +inf here; ``images.py`` caps them at the detached cutoff κ
(:func:`resolve_cutoff`).
"""

from __future__ import annotations

from dataclasses import dataclass

import gudhi
import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import minimum_spanning_tree

from reta.topology.graph import UnionGraph

LENGTH_EPS = 1e-12
MIN_POINTS_FOR_H1 = 4  # no loop survives in a flag complex on fewer than 4 points


@dataclass(frozen=True)
class CloudPairing:
    """Critical edges of one cloud, in local vertex ids, with their detached float64 values."""

    h0_death_edges: np.ndarray  # int64 [m0, 2]
    h0_deaths: np.ndarray  # float64 [m0]
    h1_birth_edges: np.ndarray  # int64 [m1, 2]
    h1_death_edges: np.ndarray  # int64 [m1, 2]; rows of essential bars are -1
    h1_births: np.ndarray  # float64 [m1]
    h1_deaths: np.ndarray  # float64 [m1]; +inf for essential bars
    extra_components: int  # essential H0 bars beyond the dropped global one

    @property
    def h1_essential(self) -> np.ndarray:
        return np.isinf(self.h1_deaths)


@dataclass(frozen=True)
class UnionPairing:
    """Critical edges of all clouds of a :class:`UnionGraph`, global vertex ids, grouped by cloud."""

    vertex_offsets: np.ndarray  # int64 [C + 1]
    h0_death_edges: np.ndarray  # int64 [m0, 2]
    h0_deaths: np.ndarray  # float64 [m0]
    h0_cloud: np.ndarray  # int64 [m0]
    h1_birth_edges: np.ndarray  # int64 [m1, 2]
    h1_death_edges: np.ndarray  # int64 [m1, 2]; -1 rows for essential bars
    h1_births: np.ndarray  # float64 [m1]
    h1_deaths: np.ndarray  # float64 [m1]; +inf for essential bars
    h1_cloud: np.ndarray  # int64 [m1]
    extra_components: np.ndarray  # int64 [C]

    @property
    def num_clouds(self) -> int:
        return len(self.vertex_offsets) - 1

    def cloud(self, c: int) -> CloudPairing:
        """The pairing of cloud ``c`` in local vertex ids."""
        off = self.vertex_offsets[c]
        s0, s1 = self.h0_cloud == c, self.h1_cloud == c
        death1 = self.h1_death_edges[s1]
        return CloudPairing(
            h0_death_edges=self.h0_death_edges[s0] - off,
            h0_deaths=self.h0_deaths[s0],
            h1_birth_edges=self.h1_birth_edges[s1] - off,
            h1_death_edges=np.where(death1 >= 0, death1 - off, -1),
            h1_births=self.h1_births[s1],
            h1_deaths=self.h1_deaths[s1],
            extra_components=int(self.extra_components[c]),
        )


def _cloud_of(vertex_offsets: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    return (np.searchsorted(vertex_offsets, vertices, side="right") - 1).astype(np.int64)


def _edge_lookup(graph: UnionGraph, uv: np.ndarray) -> np.ndarray:
    """Indices into ``graph.edges`` of the (unordered) vertex pairs ``uv [m, 2]``; raises if absent."""
    if len(uv) == 0:
        return np.zeros(0, dtype=np.int64)
    n = np.int64(graph.num_vertices)
    keys = graph.edges[:, 0] * n + graph.edges[:, 1]
    order = np.argsort(keys, kind="stable")
    lo, hi = np.minimum(uv[:, 0], uv[:, 1]), np.maximum(uv[:, 0], uv[:, 1])
    query = lo.astype(np.int64) * n + hi.astype(np.int64)
    pos = np.searchsorted(keys[order], query)
    pos = np.clip(pos, 0, len(keys) - 1)
    found = order[pos]
    if not np.array_equal(keys[found], query):
        raise RuntimeError("a critical edge is not an edge of the graph (pairing/graph mismatch)")
    return found


def h0_pairing(graph: UnionGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finite H0 death edges (global ids, ``u < v``), their weights, and the extra component count per cloud.

    Kruskal via scipy ``minimum_spanning_tree`` on ``w + 1`` (explicit-zeros trap, docs/methods.md §4.4).
    """
    n = graph.num_vertices
    if len(graph.edges):
        adj = coo_matrix((graph.weights + 1.0, (graph.edges[:, 0], graph.edges[:, 1])), shape=(n, n))
        forest = minimum_spanning_tree(adj.tocsr()).tocoo()
        uv = np.stack([forest.row, forest.col], axis=1).astype(np.int64)
    else:
        uv = np.zeros((0, 2), dtype=np.int64)
    idx = _edge_lookup(graph, uv)
    idx = np.sort(idx)  # group by cloud: the graph stores its edges cloud by cloud
    edges, deaths = graph.edges[idx], graph.weights[idx]
    per_cloud = np.bincount(_cloud_of(graph.vertex_offsets, edges[:, 0]), minlength=graph.num_clouds)
    components = graph.cloud_sizes() - per_cloud
    return edges, deaths, (components - 1).astype(np.int64)


def _flag_generators(graph: UnionGraph, edge_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """gudhi generators of H1 for the flag complex of the masked edges: finite ``[m, 4]``, essential ``[e, 2]``."""
    st = gudhi.SimplexTree()
    st.insert_batch(np.arange(graph.num_vertices, dtype=np.int64)[None, :], np.zeros(graph.num_vertices))
    edges = graph.edges[edge_mask]
    if len(edges):
        st.insert_batch(edges.T.copy(), graph.weights[edge_mask])
    st.expansion(2)
    st.compute_persistence(homology_coeff_field=2, min_persistence=-1, persistence_dim_max=st.dimension() < 2)
    _, finite, _, essential = st.flag_persistence_generators()
    fin = np.asarray(finite[0], dtype=np.int64).reshape(-1, 4) if len(finite) else np.zeros((0, 4), np.int64)
    ess = (
        np.asarray(essential[0], dtype=np.int64).reshape(-1, 2)
        if len(essential)
        else np.zeros((0, 2), np.int64)
    )
    return fin, ess


def h1_pairing(graph: UnionGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """H1 bars of every cloud with ≥ 4 points: birth edges, death edges (-1 if essential), values, cloud.

    Returned grouped by cloud (stable), global ids. Clouds with < 4 points have no H1 and are skipped.
    """
    sizes = graph.cloud_sizes()
    edge_cloud = np.repeat(np.arange(graph.num_clouds), np.diff(graph.edge_offsets))
    mask = sizes[edge_cloud] >= MIN_POINTS_FOR_H1
    if not mask.any():
        empty2 = np.zeros((0, 2), dtype=np.int64)
        return empty2, empty2.copy(), np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
    fin, ess = _flag_generators(graph, mask)
    # A pair whose birth and death edge coincide (a triangle closing the loop its longest edge just
    # opened) has persistence exactly 0 for every input: no value, no gradient — drop it.
    same = np.minimum(fin[:, 0], fin[:, 1]) == np.minimum(fin[:, 2], fin[:, 3])
    same &= np.maximum(fin[:, 0], fin[:, 1]) == np.maximum(fin[:, 2], fin[:, 3])
    fin = fin[~same]
    b_idx = _edge_lookup(graph, np.concatenate([fin[:, :2], ess]))
    d_idx = _edge_lookup(graph, fin[:, 2:])
    births = graph.weights[b_idx]
    deaths = np.concatenate([graph.weights[d_idx], np.full(len(ess), np.inf)])
    birth_edges = graph.edges[b_idx]
    death_edges = np.concatenate([graph.edges[d_idx], np.full((len(ess), 2), -1, dtype=np.int64)])
    cloud = _cloud_of(graph.vertex_offsets, birth_edges[:, 0])
    order = np.argsort(cloud, kind="stable")
    return birth_edges[order], death_edges[order], births[order], deaths[order], cloud[order]


def persistence_pairings(graph: UnionGraph, with_h1: bool = True) -> UnionPairing:
    """One combinatorial call for the whole union: H0 by MST, H1 by gudhi (see module docstring)."""
    h0_edges, h0_deaths, extra = h0_pairing(graph)
    if with_h1:
        b1, d1, bv, dv, c1 = h1_pairing(graph)
    else:
        b1, d1 = np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64)
        bv, dv, c1 = np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    return UnionPairing(
        vertex_offsets=graph.vertex_offsets,
        h0_death_edges=h0_edges,
        h0_deaths=h0_deaths,
        h0_cloud=_cloud_of(graph.vertex_offsets, h0_edges[:, 0]),
        h1_birth_edges=b1,
        h1_death_edges=d1,
        h1_births=bv,
        h1_deaths=dv,
        h1_cloud=c1,
        extra_components=extra,
    )


# ----------------------------------------------------------------------------------------------
# Differentiable re-evaluation
# ----------------------------------------------------------------------------------------------


def edge_lengths(
    points: torch.Tensor, edges: np.ndarray | torch.Tensor, squared: bool = False
) -> torch.Tensor:
    """Lengths ``[m]`` of ``edges [m, 2]`` (row indices into ``points [N, d]``), differentiable.

    ℓ = sqrt(‖z_u − z_v‖² + 1e-12) by explicit differences (docs/methods.md §4.2); the ε keeps the gradient
    finite for duplicate points. With ``squared`` the squared distance ‖z_u − z_v‖² is returned
    (smooth everywhere, no ε needed).
    """
    idx = torch.as_tensor(edges, dtype=torch.long, device=points.device).reshape(-1, 2)
    diff = points[idx[:, 0]] - points[idx[:, 1]]
    sq = (diff * diff).sum(-1)
    return sq if squared else torch.sqrt(sq + LENGTH_EPS)


@dataclass(frozen=True)
class PaddedBars:
    """Bars of several groups of clouds, padded to ``[G, m]``.

    ``deaths`` is +inf for essential bars (capped later); padding has birth = death = 0 and
    ``multiplicity`` 0. ``multiplicity`` weights each bar (1, or 1/M for the mean over M subsets).
    """

    births: torch.Tensor
    deaths: torch.Tensor
    multiplicity: torch.Tensor

    @property
    def num_groups(self) -> int:
        return int(self.births.shape[0])

    def group(self, g: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unpadded (births, deaths, multiplicity) of group ``g``."""
        keep = self.multiplicity[g] != 0
        return self.births[g][keep], self.deaths[g][keep], self.multiplicity[g][keep]


def pad_bars(
    births: torch.Tensor, deaths: torch.Tensor, mult: torch.Tensor, group: np.ndarray, num_groups: int
) -> PaddedBars:
    """Scatter flat bars with group ids into a :class:`PaddedBars` (differentiable in births/deaths)."""
    group_t = torch.as_tensor(group, dtype=torch.long)
    counts = torch.bincount(group_t, minlength=num_groups)
    width = int(counts.max()) if len(group_t) else 0
    order = torch.argsort(group_t, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    g_sorted = group_t[order]
    pos = torch.arange(len(order)) - starts[g_sorted]
    dev = births.device
    g_sorted, pos, order = g_sorted.to(dev), pos.to(dev), order.to(dev)
    out = []
    for values in (births, deaths, mult):
        buf = values.new_zeros((num_groups, width))
        out.append(buf.index_put((g_sorted, pos), values[order]))
    return PaddedBars(*out)


def _assemble_bars(
    h0_deaths: torch.Tensor,
    h1_births: torch.Tensor,
    h1_deaths: torch.Tensor,
    pairing: UnionPairing,
    groups: np.ndarray,
    num_groups: int,
    multiplicity: float,
) -> tuple[PaddedBars, PaddedBars]:
    """H0 = finite (0, death) + ``extra_components`` × (0, +inf); H1 as given; pooled into groups."""
    groups = np.asarray(groups, dtype=np.int64)
    if groups.shape != (pairing.num_clouds,):
        raise ValueError(
            f"groups must map each of the {pairing.num_clouds} clouds to a group, got {groups.shape}"
        )
    extra_group = np.repeat(groups, pairing.extra_components)
    inf = torch.full((len(extra_group),), float("inf"), dtype=h0_deaths.dtype, device=h0_deaths.device)
    h0_d = torch.cat([h0_deaths, inf])
    h0_group = np.concatenate([groups[pairing.h0_cloud], extra_group]).astype(np.int64)
    h0 = pad_bars(torch.zeros_like(h0_d), h0_d, torch.full_like(h0_d, multiplicity), h0_group, num_groups)
    h1 = pad_bars(
        h1_births, h1_deaths, torch.full_like(h1_births, multiplicity), groups[pairing.h1_cloud], num_groups
    )
    return h0, h1


def union_bars(
    points: torch.Tensor,
    pairing: UnionPairing,
    groups: np.ndarray,
    num_groups: int,
    multiplicity: float = 1.0,
    squared: bool = False,
) -> tuple[PaddedBars, PaddedBars]:
    """Differentiable H0 and H1 bars of all clouds, pooled into ``num_groups`` groups.

    ``points [N, d]`` is the concatenation of the clouds in union order (global vertex ids index
    its rows); ``groups [C]`` maps cloud → group (identity for one group per cloud). Every bar gets
    ``multiplicity``. H0: finite bars (0, ℓ(death edge)) plus ``extra_components`` bars (0, +inf);
    H1: (ℓ(birth edge), ℓ(death edge) or +inf), ℓ re-evaluated by :func:`edge_lengths`.
    """
    safe_death_edges = np.where(pairing.h1_death_edges >= 0, pairing.h1_death_edges, pairing.h1_birth_edges)
    # one gather (and one scatter in the backward) for all critical edges: each length is computed as it would be
    # alone, so the values are those of three separate calls
    m0, m1 = len(pairing.h0_death_edges), len(pairing.h1_birth_edges)
    every = np.concatenate([np.asarray(e, dtype=np.int64).reshape(-1, 2)
                            for e in (pairing.h0_death_edges, pairing.h1_birth_edges, safe_death_edges)])
    lengths = edge_lengths(points, every, squared)
    h0_d, h1_b, h1_d_all = lengths[:m0], lengths[m0 : m0 + m1], lengths[m0 + m1 :]
    finite = torch.as_tensor(~np.isinf(pairing.h1_deaths), device=points.device)
    h1_d = torch.where(finite, h1_d_all, torch.full_like(h1_b, float("inf")))
    return _assemble_bars(h0_d, h1_b, h1_d, pairing, groups, num_groups, multiplicity)


def pairing_bars(
    pairing: UnionPairing, groups: np.ndarray, num_groups: int, multiplicity: float = 1.0
) -> tuple[PaddedBars, PaddedBars]:
    """Like :func:`union_bars` but from the pairing's detached float64 values (no points, no gradient).

    For targets that never need a gradient (real subsets); values are the graph's edge weights,
    i.e. without the ε of :func:`edge_lengths`.
    """
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return _assemble_bars(
        as_t(pairing.h0_deaths),
        as_t(pairing.h1_births),
        as_t(pairing.h1_deaths),
        pairing,
        groups,
        num_groups,
        multiplicity,
    )


def resolve_cutoff(
    policy: str | float, real_longest: torch.Tensor | None, syn_longest: torch.Tensor
) -> torch.Tensor:
    """Per-class cutoff κ (detached), docs/methods.md §4.2 "Cutoff".

    ``joint``: max(longest real-subset edge, longest synthetic edge) — nothing leaves the grid;
    ``real``: longest real-subset edge only; a float: that value for every class.
    """
    if isinstance(policy, bool):
        raise ValueError("cutoff policy must be 'joint', 'real' or a positive float")
    if isinstance(policy, (int, float)):
        if policy <= 0:
            raise ValueError(f"fixed cutoff must be > 0, got {policy}")
        kappa = torch.full_like(syn_longest, float(policy))
    elif policy in ("joint", "real"):
        if real_longest is None:
            raise ValueError(f"cutoff policy {policy!r} needs the real longest edges")
        kappa = (
            real_longest.to(syn_longest)
            if policy == "real"
            else torch.maximum(real_longest.to(syn_longest), syn_longest)
        )
    else:
        raise ValueError(f"unknown cutoff policy {policy!r}; expected 'joint', 'real' or a float")
    if bool((kappa <= 0).any()):
        raise ValueError("cutoff must be > 0 for every class (a cloud without edges has no scale)")
    return kappa.detach()

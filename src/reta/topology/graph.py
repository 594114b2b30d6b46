"""Batched mutual k-nearest-neighbour graphs of several point clouds, as one disjoint union.

Source: docs/methods.md §4.2 "Graph and filtration" — per point cloud, an edge i–j exists iff i is among
the k_eff = min(k, n − 1) nearest neighbours of j *and* j among those of i (mutual k-NN); its weight
is the Euclidean distance ℓ_ij = ‖z_i − z_j‖₂ (squared distance as an option). With n ≤ k + 1 the
graph is complete. Clouds never share edges; their vertex ids are offset so that all graphs of a
step form one disjoint union that a single combinatorial call (``diagrams.py``) can process.

Everything here works on detached values and returns numpy arrays: the graph only decides *which*
edges exist; differentiable lengths are re-evaluated later (``diagrams.edge_lengths``).
Distances are sums of squared differences in float64 (no Gram-matrix formula), so they agree with
the re-evaluated lengths to rounding and exact duplicates have distance exactly 0. Graphs can also
be built from given squared-distance matrices (sub-blocks of a pool's matrix for random subsets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class UnionGraph:
    """Mutual k-NN graphs of several clouds as one disjoint union.

    Attributes:
        edges: int64 ``[E, 2]`` global vertex ids, ``u < v``, grouped by cloud in input order.
        weights: float64 ``[E]`` edge weights (Euclidean, or squared Euclidean if ``squared``).
        vertex_offsets: int64 ``[C + 1]``; cloud ``c`` owns global vertices
            ``vertex_offsets[c] : vertex_offsets[c + 1]``.
        edge_offsets: int64 ``[C + 1]``; cloud ``c`` owns ``edges[edge_offsets[c] : edge_offsets[c + 1]]``.
        squared: whether ``weights`` are squared distances.
    """

    edges: np.ndarray
    weights: np.ndarray
    vertex_offsets: np.ndarray
    edge_offsets: np.ndarray
    squared: bool

    @property
    def num_clouds(self) -> int:
        return len(self.vertex_offsets) - 1

    @property
    def num_vertices(self) -> int:
        return int(self.vertex_offsets[-1])

    def cloud_sizes(self) -> np.ndarray:
        """Number of points of every cloud, int64 ``[C]``."""
        return np.diff(self.vertex_offsets)

    def cloud_edges(self, cloud: int) -> tuple[np.ndarray, np.ndarray]:
        """Edges of one cloud in *local* vertex ids and their weights."""
        lo, hi = self.edge_offsets[cloud], self.edge_offsets[cloud + 1]
        return self.edges[lo:hi] - self.vertex_offsets[cloud], self.weights[lo:hi]

    def longest_edge(self) -> np.ndarray:
        """Largest edge weight of every cloud, float64 ``[C]`` (0 for a cloud without edges)."""
        out = np.zeros(self.num_clouds, dtype=np.float64)
        counts = np.diff(self.edge_offsets)
        nonempty = counts > 0
        if nonempty.any():
            starts = self.edge_offsets[:-1][nonempty]
            out[nonempty] = np.maximum.reduceat(self.weights, starts)
        return out


def effective_k(k: int, n: int) -> int:
    """k_eff = min(k, n − 1) (docs/methods.md §4.2); ``k`` must be ≥ 1."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return max(0, min(k, n - 1))


def pairwise_sq_distances(points: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[B, n, n]`` of ``points [B, n, d]``, detached, float64.

    Uses ``torch.cdist`` with ``compute_mode="donot_use_mm_for_euclid_dist"``: a sum of squared
    differences per pair (no Gram-matrix cancellation), so duplicates get exactly 0 — without
    materialising the ``[B, n, n, d]`` difference tensor.
    """
    if points.dim() != 3:
        raise ValueError(f"points must be [B, n, d], got shape {tuple(points.shape)}")
    x = points.detach().to(torch.float64)
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    return dist * dist


def mutual_knn_mask(sq_dist: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean ``[B, n, n]`` symmetric adjacency of the mutual k-NN graph (no self loops).

    ``sq_dist`` holds squared distances (ranking is the same as for distances). Ties among equally
    distant neighbours are broken by ``torch.topk`` (deterministic for a given input).
    """
    b, n, _ = sq_dist.shape
    keff = effective_k(k, n)
    if keff == 0:
        return torch.zeros((b, n, n), dtype=torch.bool)
    eye = torch.eye(n, dtype=torch.bool)
    masked = sq_dist.masked_fill(eye, float("inf"))
    if keff == n - 1:  # complete graph: every other point is a neighbour
        return ~eye.expand(b, n, n).clone()
    idx = masked.topk(keff, dim=-1, largest=False).indices
    knn = torch.zeros((b, n, n), dtype=torch.bool)
    knn.scatter_(-1, idx, True)
    return knn & knn.transpose(1, 2)


def _validate_clouds(clouds: Sequence[torch.Tensor]) -> None:
    if len(clouds) == 0:
        raise ValueError("need at least one point cloud")
    for c in clouds:
        if c.dim() != 2 or c.shape[0] < 1:
            raise ValueError(f"every cloud must be [n >= 1, d], got shape {tuple(c.shape)}")
    dims = {int(c.shape[-1]) for c in clouds}
    if len(dims) != 1:
        raise ValueError(f"all clouds must share the feature dimension, got {sorted(dims)}")


def _size_groups(sizes: Sequence[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(sizes):
        groups.setdefault(int(n), []).append(i)
    return groups


def mutual_knn_graphs_from_sq_distances(
    sq_distances: Sequence[torch.Tensor], k: int, squared: bool = False
) -> UnionGraph:
    """Mutual k-NN graphs from squared-distance matrices ``[n_c, n_c]`` (one per cloud), as a union.

    Clouds of equal size are processed as one batch. Edge ``(u, v)`` with ``u < v`` in local ids is
    shifted by the cloud's vertex offset (the sum of the sizes of the clouds before it).
    """
    if len(sq_distances) == 0:
        raise ValueError("need at least one point cloud")
    sizes = [int(m.shape[0]) for m in sq_distances]
    for m in sq_distances:
        if m.dim() != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 1:
            raise ValueError(f"every distance matrix must be [n, n] with n >= 1, got {tuple(m.shape)}")
    vertex_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    cloud_ids, edge_parts, weight_parts = [], [], []
    for members in _size_groups(sizes).values():
        sq = torch.stack([sq_distances[i].detach().to("cpu", torch.float64) for i in members])
        mask = torch.triu(mutual_knn_mask(sq, k), diagonal=1)
        b, u, v = mask.nonzero(as_tuple=True)  # row-major: by cloud, then (u, v)
        cloud = torch.as_tensor(members, dtype=torch.long)[b].numpy()
        cloud_ids.append(cloud)
        edge_parts.append(np.stack([u.numpy(), v.numpy()], axis=1) + vertex_offsets[cloud][:, None])
        weight_parts.append(sq[b, u, v].numpy())
    cloud = np.concatenate(cloud_ids)
    order = np.argsort(cloud, kind="stable")
    edges = np.concatenate(edge_parts).reshape(-1, 2)[order].astype(np.int64)
    weights = np.concatenate(weight_parts)[order].astype(np.float64)
    if not squared:
        weights = np.sqrt(weights)
    counts = np.bincount(cloud, minlength=len(sizes))
    edge_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return UnionGraph(edges, weights, vertex_offsets, edge_offsets, squared)


def mutual_knn_graphs(clouds: Sequence[torch.Tensor], k: int, squared: bool = False) -> UnionGraph:
    """Mutual k-NN graphs of all ``clouds`` (each ``[n_c, d]``) as one :class:`UnionGraph`."""
    _validate_clouds(clouds)
    sq: list[torch.Tensor] = [None] * len(clouds)  # type: ignore[list-item]
    for members in _size_groups([int(c.shape[0]) for c in clouds]).values():
        batch = pairwise_sq_distances(torch.stack([clouds[i].detach().cpu() for i in members]))
        for slot, i in enumerate(members):
            sq[i] = batch[slot]
    return mutual_knn_graphs_from_sq_distances(sq, k, squared)

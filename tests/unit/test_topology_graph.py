"""Mutual k-NN graphs of several clouds as one disjoint union (docs/methods.md §4.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reta.topology.graph import effective_k, mutual_knn_graphs

torch.set_num_threads(1)


def _brute_force_mutual_knn(x: np.ndarray, k: int) -> set[tuple[int, int]]:
    n = len(x)
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    keff = min(k, n - 1)
    knn = [set(np.argsort(dist[i], kind="stable")[:keff].tolist()) for i in range(n)]
    return {(i, j) for i in range(n) for j in range(i + 1, n) if j in knn[i] and i in knn[j]}


@pytest.mark.parametrize("n,d,k", [(12, 3, 3), (30, 16, 5), (25, 64, 10)])
def test_edges_are_exactly_the_mutual_knn_pairs(n: int, d: int, k: int) -> None:
    x = np.random.default_rng(n + d + k).standard_normal((n, d))
    graph = mutual_knn_graphs([torch.from_numpy(x)], k)
    got = {tuple(e) for e in graph.edges.tolist()}
    assert got == _brute_force_mutual_knn(x, k)
    assert np.all(graph.edges[:, 0] < graph.edges[:, 1])


def test_weights_are_euclidean_or_squared_float64() -> None:
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    g = mutual_knn_graphs([x], 4)
    g2 = mutual_knn_graphs([x], 4, squared=True)
    x64 = x.double().numpy()
    expect = np.linalg.norm(x64[g.edges[:, 0]] - x64[g.edges[:, 1]], axis=1)
    assert g.weights.dtype == np.float64
    np.testing.assert_allclose(g.weights, expect, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(g.edges, g2.edges)
    np.testing.assert_allclose(g2.weights, expect**2, rtol=1e-12, atol=0)
    assert g2.squared and not g.squared


@pytest.mark.parametrize("k", [7, 9, 50])
def test_k_at_least_n_minus_one_gives_complete_graph(k: int) -> None:
    n = 8
    g = mutual_knn_graphs([torch.randn(n, 5)], k)
    assert effective_k(k, n) == n - 1
    assert len(g.edges) == n * (n - 1) // 2


def test_union_offsets_and_per_cloud_edges_match_single_clouds() -> None:
    gen = torch.Generator().manual_seed(3)
    clouds = [torch.randn(n, 6, generator=gen) for n in (10, 4, 10, 1, 7)]
    union = mutual_knn_graphs(clouds, 3)
    np.testing.assert_array_equal(union.vertex_offsets, [0, 10, 14, 24, 25, 32])
    assert union.num_clouds == 5 and union.num_vertices == 32
    for c, cloud in enumerate(clouds):
        single = mutual_knn_graphs([cloud], 3)
        edges, weights = union.cloud_edges(c)
        np.testing.assert_array_equal(edges, single.edges)
        np.testing.assert_array_equal(weights, single.weights)
        lo, hi = union.vertex_offsets[c], union.vertex_offsets[c + 1]
        block = union.edges[union.edge_offsets[c] : union.edge_offsets[c + 1]]
        assert np.all((block >= lo) & (block < hi))
    longest = union.longest_edge()
    assert longest[3] == 0.0  # a one-point cloud has no edge
    assert longest[0] == pytest.approx(union.cloud_edges(0)[1].max())


def test_duplicate_points_are_joined_by_a_zero_edge() -> None:
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(5))
    x[6] = x[2]
    g = mutual_knn_graphs([x], 2)
    zero = g.weights == 0.0
    assert zero.sum() == 1
    assert tuple(g.edges[zero][0]) == (2, 6)


def test_invalid_input_raises() -> None:
    with pytest.raises(ValueError):
        mutual_knn_graphs([torch.randn(5, 3), torch.randn(5, 4)], 2)
    with pytest.raises(ValueError):
        mutual_knn_graphs([torch.randn(5, 3)], 0)
    with pytest.raises(ValueError):
        mutual_knn_graphs([], 2)

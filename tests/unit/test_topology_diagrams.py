"""Persistence pairings with critical edges vs ripser / scipy, and their re-evaluation (docs/methods.md §4.6 1–3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ripser import ripser
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import minimum_spanning_tree

from reta.topology.diagrams import edge_lengths, persistence_pairings, resolve_cutoff, union_bars
from reta.topology.graph import mutual_knn_graphs

torch.set_num_threads(1)


def _ripser_on_graph(edges: np.ndarray, weights: np.ndarray, n: int) -> list[np.ndarray]:
    """ripser on the same sparse graph, upper-triangular COO (ripser ignores i > j entries)."""
    assert np.all(edges[:, 0] < edges[:, 1])
    dist = coo_matrix((weights, (edges[:, 0], edges[:, 1])), shape=(n, n))
    return ripser(dist, distance_matrix=True, maxdim=1)["dgms"]


def _sorted_pairs(b: np.ndarray, d: np.ndarray) -> np.ndarray:
    pairs = np.stack([b, d], axis=1)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


CASES = [
    (int(n), int(d), int(k))
    for n, d, k in zip(
        np.random.default_rng(0).integers(12, 61, 12),
        np.random.default_rng(1).choice([8, 32, 128, 512], 12),
        np.random.default_rng(2).integers(5, 16, 12),
    )
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_diagrams_equal_ripser_on_the_same_sparse_graph(case: int) -> None:
    n, d, k = CASES[case]
    x = torch.from_numpy(np.random.default_rng(100 + case).standard_normal((n, d)))
    graph = mutual_knn_graphs([x], k)
    p = persistence_pairings(graph).cloud(0)
    h0, h1 = _ripser_on_graph(graph.edges, graph.weights, n)
    # H0: finite deaths, and essential count (ripser keeps the global component, we drop it)
    np.testing.assert_allclose(np.sort(p.h0_deaths), np.sort(h0[np.isfinite(h0[:, 1]), 1]), rtol=1e-6)
    assert p.extra_components == int(np.isinf(h0[:, 1]).sum()) - 1
    # H1 finite (ripser drops zero-persistence pairs, which never reach a persistence image anyway)
    keep = np.isfinite(p.h1_deaths) & (p.h1_deaths > p.h1_births)
    ours = _sorted_pairs(p.h1_births[keep], p.h1_deaths[keep])
    fin = h1[np.isfinite(h1[:, 1])]
    theirs = _sorted_pairs(fin[:, 0], fin[:, 1])
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    # H1 essential: births
    np.testing.assert_allclose(
        np.sort(p.h1_births[p.h1_essential]), np.sort(h1[np.isinf(h1[:, 1]), 0]), rtol=1e-6
    )


def test_critical_edges_carry_their_values() -> None:
    x = torch.randn(30, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    p = persistence_pairings(mutual_knn_graphs([x], 6)).cloud(0)
    xn = x.numpy()

    def length(e: np.ndarray) -> np.ndarray:
        return np.linalg.norm(xn[e[:, 0]] - xn[e[:, 1]], axis=1)

    np.testing.assert_allclose(length(p.h0_death_edges), p.h0_deaths, atol=1e-12)
    np.testing.assert_allclose(length(p.h1_birth_edges), p.h1_births, atol=1e-12)
    fin = ~p.h1_essential
    np.testing.assert_allclose(length(p.h1_death_edges[fin]), p.h1_deaths[fin], atol=1e-12)
    assert np.all(p.h1_death_edges[~fin] == -1)
    assert np.all(p.h1_deaths[fin] >= p.h1_births[fin])


def _kruskal(n: int, edges: np.ndarray, weights: np.ndarray) -> np.ndarray:
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    out = []
    for i in np.argsort(weights, kind="stable"):
        ru, rv = find(int(edges[i, 0])), find(int(edges[i, 1]))
        if ru != rv:
            parent[ru] = rv
            out.append(weights[i])
    return np.sort(np.array(out))


def test_h0_deaths_equal_mst_weights_with_a_duplicate_point() -> None:
    x = torch.randn(25, 10, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x[11] = x[3]  # duplicate: a zero-length edge that scipy alone would drop
    graph = mutual_knn_graphs([x], 5)
    p = persistence_pairings(graph).cloud(0)
    expect = _kruskal(25, graph.edges, graph.weights)
    assert len(p.h0_deaths) == len(expect)
    np.testing.assert_allclose(np.sort(p.h0_deaths), expect, rtol=0, atol=1e-12)
    assert np.sort(p.h0_deaths)[0] == 0.0
    # scipy MST without the +1 offset loses the zero edge and reports one component too many
    dense = coo_matrix((graph.weights, (graph.edges[:, 0], graph.edges[:, 1])), shape=(25, 25))
    naive = minimum_spanning_tree(dense.tocsr())
    assert naive.nnz == len(expect) - 1
    np.testing.assert_allclose(np.sort(naive.data), expect[1:], atol=1e-12)
    # differentiable lengths: sqrt(w² + 1e-12), finite at the duplicate
    lengths = edge_lengths(x, p.h0_death_edges)
    np.testing.assert_allclose(lengths.numpy(), np.sqrt(p.h0_deaths**2 + 1e-12), atol=1e-15)


def test_union_call_equals_per_class_calls_exactly() -> None:
    gen = torch.Generator().manual_seed(11)
    clouds = [torch.randn(n, 12, generator=gen, dtype=torch.float64) for n in (10, 20, 3, 10, 15)]
    union = persistence_pairings(mutual_knn_graphs(clouds, 4))
    for c, cloud in enumerate(clouds):
        single = persistence_pairings(mutual_knn_graphs([cloud], 4)).cloud(0)
        got = union.cloud(c)
        assert got.extra_components == single.extra_components
        np.testing.assert_array_equal(np.sort(got.h0_deaths), np.sort(single.h0_deaths))
        np.testing.assert_array_equal(
            _sorted_pairs(got.h1_births, got.h1_deaths), _sorted_pairs(single.h1_births, single.h1_deaths)
        )
        rows = lambda a: np.sort(np.sort(a, axis=1), axis=0)  # noqa: E731
        np.testing.assert_array_equal(rows(got.h0_death_edges), rows(single.h0_death_edges))
        np.testing.assert_array_equal(rows(got.h1_birth_edges), rows(single.h1_birth_edges))


def test_four_cycle_with_k2_has_exactly_one_essential_loop() -> None:
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.05], [0.0, 1.05]], dtype=torch.float64)
    graph = mutual_knn_graphs([square], 2)
    assert len(graph.edges) == 4  # the four sides, no diagonal, no triangle
    p = persistence_pairings(graph).cloud(0)
    assert p.h1_essential.sum() == 1 and len(p.h1_births) == 1
    assert p.h1_births[0] == pytest.approx(1.05)
    assert p.extra_components == 0 and len(p.h0_deaths) == 3


def test_clouds_below_four_points_have_no_h1_and_h1_can_be_skipped() -> None:
    gen = torch.Generator().manual_seed(2)
    clouds = [torch.randn(3, 4, generator=gen), torch.randn(20, 4, generator=gen)]
    full = persistence_pairings(mutual_knn_graphs(clouds, 6))
    assert len(mutual_knn_graphs(clouds[:1], 6).edges) == 3  # a filled triangle
    assert len(full.cloud(0).h1_births) == 0
    assert len(full.cloud(1).h1_births) > 0
    h0_only = persistence_pairings(mutual_knn_graphs(clouds, 6), with_h1=False)
    assert len(h0_only.h1_births) == 0
    np.testing.assert_array_equal(h0_only.h0_deaths, full.h0_deaths)


def test_union_bars_pool_clouds_into_groups_with_gradient() -> None:
    gen = torch.Generator().manual_seed(9)
    clouds = [torch.randn(8, 5, generator=gen, dtype=torch.float64) for _ in range(4)]
    pairing = persistence_pairings(mutual_knn_graphs(clouds, 3))
    points = torch.cat(clouds).requires_grad_()
    h0, h1 = union_bars(points, pairing, np.array([0, 0, 1, 1]), 2, multiplicity=0.5)
    for g, members in enumerate(([0, 1], [2, 3])):
        b, d, m = h0.group(g)
        n_fin = sum(len(pairing.cloud(c).h0_deaths) for c in members)
        n_ext = sum(pairing.cloud(c).extra_components for c in members)
        assert len(b) == n_fin + n_ext and torch.all(m == 0.5) and torch.all(b == 0)
        assert int(torch.isinf(d).sum()) == n_ext
        b1, d1, _ = h1.group(g)
        assert len(b1) == sum(len(pairing.cloud(c).h1_births) for c in members)
    finite = torch.isfinite(h0.deaths)
    (h0.deaths[finite].sum() + h1.births.sum()).backward()
    assert torch.isfinite(points.grad).all() and points.grad.abs().sum() > 0


def test_resolve_cutoff_policies() -> None:
    real, syn = torch.tensor([1.0, 2.0]), torch.tensor([1.5, 1.0])
    torch.testing.assert_close(resolve_cutoff("joint", real, syn), torch.tensor([1.5, 2.0]))
    torch.testing.assert_close(resolve_cutoff("real", real, syn), real)
    torch.testing.assert_close(resolve_cutoff(4.0, None, syn), torch.tensor([4.0, 4.0]))
    assert not resolve_cutoff("joint", real.requires_grad_(), syn).requires_grad
    for bad in ("median", -1.0, True):
        with pytest.raises(ValueError):
            resolve_cutoff(bad, real, syn)
    with pytest.raises(ValueError):
        resolve_cutoff("joint", None, syn)

"""PTA loss: gradients, descent, size-matched targets and edge behaviour (docs/methods.md §4.6 5–7)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reta.topology.diagrams import persistence_pairings
from reta.topology.graph import mutual_knn_graphs
from reta.topology.loss import (
    TopologyConfig,
    TopologyLoss,
    build_real_targets,
    per_class_topology_loss,
    topology_loss,
)

torch.set_num_threads(1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sphere(n: int, d: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=_gen(seed), dtype=dtype), dim=1)


@pytest.mark.parametrize("cutoff", [4.0, "real"])
def test_gradcheck_float64(cutoff: str | float) -> None:
    cfg = TopologyConfig(k=4, grid=8, sigma=0.2, cutoff=cutoff, num_subsets=3)
    pools = [0.5 * torch.randn(9, 3, generator=_gen(s), dtype=torch.float64) for s in (1, 2)]
    targets = build_real_targets(pools, 6, cfg, _gen(0))
    syn = [0.5 * torch.randn(6, 3, generator=_gen(s), dtype=torch.float64).requires_grad_() for s in (42, 64)]
    pairing = persistence_pairings(mutual_knn_graphs(syn, cfg.k))  # every bar kind is exercised:
    assert (np.isfinite(pairing.h1_deaths) & (pairing.h1_deaths > pairing.h1_births)).sum() == 2  # finite H1
    assert np.isinf(pairing.h1_deaths).sum() == 1 and pairing.extra_components.tolist() == [0, 1]
    assert topology_loss(syn, targets, cfg) > 0

    def f(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return topology_loss([a, b], targets, cfg)

    assert torch.autograd.gradcheck(f, tuple(syn), eps=1e-6, atol=1e-7, rtol=1e-4)


def test_descent_along_negative_gradient() -> None:
    cfg = TopologyConfig(k=5, grid=16, sigma=0.05, cutoff=2.5, num_subsets=4)
    pools = [_sphere(30, 16, s) for s in range(3)]
    targets = build_real_targets(pools, 10, cfg, _gen(0))
    syn = [_sphere(10, 16, 10 + s).requires_grad_() for s in range(3)]
    loss = topology_loss(syn, targets, cfg)
    loss.backward()
    grad = torch.cat([z.grad.flatten() for z in syn])
    gnorm = grad.norm()
    assert gnorm > 0
    for t in (1e-1, 1e-2, 1e-3):
        moved = [(z - t * z.grad / gnorm).detach() for z in syn]
        delta = float(topology_loss(moved, targets, cfg) - loss.detach())
        assert delta < 0, f"no descent at t={t}"
        if t == 1e-3:
            assert delta == pytest.approx(-t * float(gnorm), rel=1e-2)


def test_identical_cloud_has_zero_loss_and_different_cloud_positive() -> None:
    cfg = TopologyConfig(k=4, grid=16, sigma=0.05, num_subsets=2)
    pool = _sphere(8, 12, 0)
    targets = build_real_targets([pool], 8, cfg, _gen(0))  # every subset is the whole pool
    same = pool[torch.randperm(8, generator=_gen(1))].clone().requires_grad_()
    zero = topology_loss([same], targets, cfg)
    assert float(zero.detach()) < 1e-15
    zero.backward()
    assert float(same.grad.abs().max()) < 1e-10
    assert float(topology_loss([_sphere(8, 12, 5)], targets, cfg)) > 1e-4


def test_real_target_is_mean_of_subset_images() -> None:
    cfg = TopologyConfig(k=3, grid=10, sigma=0.1, cutoff=2.0, num_subsets=3)
    pool = _sphere(15, 6, 2)
    target = build_real_targets([pool], 7, cfg, _gen(42))[0]
    replay = _gen(42)
    subsets = [pool[torch.randperm(15, generator=replay)[:7]] for _ in range(3)]
    single_cfg = dataclasses.replace(cfg, num_subsets=1)
    singles = build_real_targets(subsets, 7, single_cfg, _gen(0))
    for i in range(2):
        mean = torch.stack([s.images[i] for s in singles]).mean(0)
        torch.testing.assert_close(target.images[i], mean, rtol=0, atol=1e-14)
    assert target.longest_edge == pytest.approx(max(s.longest_edge for s in singles), abs=0)


@pytest.mark.parametrize("scale", [3.0, 0.2])
def test_joint_cutoff_is_max_of_real_and_synthetic_longest_edge(scale: float) -> None:
    pools = [_sphere(20, 8, 0)]
    syn = [
        scale * _sphere(6, 8, 1)
    ]  # 3.0: the synthetic edge wins (image redrawn); 0.2: the real one (cached)
    joint = TopologyConfig(k=3, grid=12, sigma=0.1, cutoff="joint", num_subsets=2)
    t_joint = build_real_targets(pools, 6, joint, _gen(0))
    kappa = max(t_joint[0].longest_edge, float(mutual_knn_graphs(syn, 3).longest_edge()[0]))
    assert (kappa > t_joint[0].longest_edge) == (scale > 1)
    fixed = dataclasses.replace(joint, cutoff=kappa)
    t_fixed = build_real_targets(pools, 6, fixed, _gen(0))
    torch.testing.assert_close(
        topology_loss(syn, t_joint, joint), topology_loss(syn, t_fixed, fixed), rtol=1e-12, atol=0
    )


def test_ipc1_gives_constant_zero_without_gradient() -> None:
    cfg = TopologyConfig()
    syn = [torch.randn(1, 8, requires_grad=True) for _ in range(3)]
    loss = topology_loss(syn, [None, None, None], cfg)
    assert float(loss) == 0.0 and not loss.requires_grad
    module = TopologyLoss()
    assert not module(syn, [0, 1, 2]).requires_grad  # needs no cached target either


def test_one_point_classes_are_left_out_of_the_mean() -> None:
    cfg = TopologyConfig(k=3, grid=8, sigma=0.1, num_subsets=2)
    targets = build_real_targets([_sphere(12, 5, 0)], 5, cfg, _gen(0))
    cloud = _sphere(5, 5, 3)
    alone = topology_loss([cloud], targets, cfg)
    mixed = topology_loss([torch.zeros(1, 5, dtype=torch.float64), cloud], [None, targets[0]], cfg)
    assert float(alone) > 0
    torch.testing.assert_close(mixed, alone, rtol=0, atol=0)
    values, mask = per_class_topology_loss(
        [torch.zeros(1, 5, dtype=torch.float64), cloud], [None, targets[0]], cfg
    )
    assert mask.tolist() == [False, True] and float(values[0]) == 0.0


@pytest.mark.parametrize("ipc", [2, 3])
def test_ipc2_and_3_are_h0_only_with_finite_gradient(ipc: int) -> None:
    losses = []
    for gamma in (0.0, 5.0):
        cfg = TopologyConfig(grid=8, sigma=0.1, gamma=gamma, num_subsets=4)
        targets = build_real_targets([_sphere(10, 6, 0), _sphere(10, 6, 1)], ipc, cfg, _gen(0))
        syn = [_sphere(ipc, 6, 5).requires_grad_(), _sphere(ipc, 6, 6).requires_grad_()]
        loss = topology_loss(syn, targets, cfg)
        loss.backward()
        assert all(torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0 for z in syn)
        losses.append(float(loss.detach()))
    assert losses[0] == losses[1] > 0  # gamma has no effect: H1 skipped


def test_k_larger_than_n_is_the_complete_graph() -> None:
    results = []
    for k in (5, 50):
        cfg = TopologyConfig(k=k, grid=8, sigma=0.1, num_subsets=2)
        targets = build_real_targets([_sphere(9, 4, 0)], 6, cfg, _gen(0))
        results.append(float(topology_loss([_sphere(6, 4, 1)], targets, cfg)))
    assert results[0] == results[1] > 0


def test_duplicate_points_keep_gradients_finite() -> None:
    cfg = TopologyConfig(k=3, grid=8, sigma=0.1, num_subsets=2)
    targets = build_real_targets([_sphere(12, 5, 0)], 6, cfg, _gen(0))
    base = _sphere(6, 5, 1)
    base[4] = base[1]
    syn = base.clone().requires_grad_()
    loss = topology_loss([syn], targets, cfg)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(syn.grad).all()
    assert syn.grad.abs().sum() > 0


def test_gradient_reaches_pixels_through_a_frozen_conv_net() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
    ).requires_grad_(False)
    real_images = torch.rand(20, 1, 8, 8, generator=_gen(1))
    cfg = TopologyConfig(k=3, grid=8, sigma=0.1, num_subsets=2)
    targets = build_real_targets([F.normalize(net(real_images), dim=1)], 5, cfg, _gen(0))
    pixels = torch.rand(5, 1, 8, 8, generator=_gen(2)).requires_grad_()
    loss = topology_loss([F.normalize(net(pixels), dim=1)], targets, cfg)
    loss.backward()
    assert pixels.grad is not None and torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_sum_reduction_is_class_count_times_mean() -> None:
    mean_cfg = TopologyConfig(k=3, grid=8, sigma=0.1, num_subsets=2)
    sum_cfg = dataclasses.replace(mean_cfg, reduction="sum")
    pools = [_sphere(10, 4, s) for s in range(3)]
    syn = [_sphere(5, 4, 10 + s) for s in range(3)]
    mean = topology_loss(syn, build_real_targets(pools, 5, mean_cfg, _gen(0)), mean_cfg)
    total = topology_loss(syn, build_real_targets(pools, 5, sum_cfg, _gen(0)), sum_cfg)
    torch.testing.assert_close(total, 3 * mean, rtol=1e-12, atol=0)


def test_module_cached_targets_equal_recomputed_targets() -> None:
    pools = {3: _sphere(15, 6, 0), 7: _sphere(15, 6, 1)}
    syn = [_sphere(5, 6, 2), _sphere(5, 6, 3)]
    cached = TopologyLoss(k=3, grid=8, sigma=0.1, num_subsets=3, seed=123)
    cached.cache_real_targets(pools, 5)
    fresh = TopologyLoss(k=3, grid=8, sigma=0.1, num_subsets=3, seed=123)
    a = cached(syn, [3, 7])
    b = fresh(syn, [3, 7], real_pools=[pools[3], pools[7]])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(KeyError):
        cached(syn, [3, 8])
    cached.clear_cache()
    with pytest.raises(KeyError):
        cached(syn, [3, 7])


def test_mismatched_targets_raise() -> None:
    cfg = TopologyConfig(k=3, grid=8, sigma=0.1, num_subsets=2)
    targets = build_real_targets([_sphere(10, 4, 0)], 5, cfg, _gen(0))
    with pytest.raises(ValueError, match="size-matched"):
        topology_loss([_sphere(6, 4, 1)], targets, cfg)
    with pytest.raises(ValueError, match="TopologyConfig"):
        topology_loss([_sphere(5, 4, 1)], targets, dataclasses.replace(cfg, gamma=2.0))
    with pytest.raises(ValueError, match="pool"):
        build_real_targets([_sphere(4, 4, 0)], 5, cfg, _gen(0))
    with pytest.raises(ValueError):
        TopologyConfig(cutoff="median")


def test_float32_clouds_give_float32_loss() -> None:
    cfg = TopologyConfig(k=3, grid=8, sigma=0.1, num_subsets=2)
    targets = build_real_targets([_sphere(10, 4, 0, torch.float32)], 5, cfg, _gen(0))
    syn = _sphere(5, 4, 1, torch.float32).requires_grad_()
    loss = topology_loss([syn], targets, cfg)
    loss.backward()
    assert loss.dtype == torch.float32 and syn.grad.dtype == torch.float32
    assert np.isfinite(float(loss.detach())) and float(loss.detach()) > 0


def _oracle_images(
    cloud: torch.Tensor, k: int, kappa: float, grid: int, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """PI⁰, PI¹ of one cloud from ripser diagrams on the same graph and persim images (independent path)."""
    from persim import PersistenceImager
    from ripser import ripser
    from scipy.sparse import coo_matrix

    graph = mutual_knn_graphs([cloud], k)
    n = cloud.shape[0]
    dist = coo_matrix((graph.weights, (graph.edges[:, 0], graph.edges[:, 1])), shape=(n, n))
    h0, h1 = ripser(dist, distance_matrix=True, maxdim=1)["dgms"]
    h0 = np.delete(h0, np.flatnonzero(np.isinf(h0[:, 1]))[0], axis=0)  # drop the global component
    imager = PersistenceImager(
        birth_range=(0, 1),
        pers_range=(0, 1),
        pixel_size=1 / grid,
        weight="persistence",
        weight_params={"n": 1},
        kernel_params={"sigma": [[sigma**2, 0.0], [0.0, sigma**2]]},
    )
    images = []
    for dgm in (h0, h1):
        capped = np.minimum(dgm.astype(np.float64), kappa) / kappa
        images.append(imager.transform(capped, skew=True) if len(capped) else np.zeros((grid, grid)))
    return images[0], images[1]


def test_loss_value_equals_ripser_persim_oracle() -> None:
    cfg = TopologyConfig(k=4, grid=12, sigma=0.08, gamma=0.7, cutoff=2.0, num_subsets=3)
    pool = _sphere(20, 5, 0)
    target = build_real_targets([pool], 9, cfg, _gen(7))
    replay = _gen(7)
    subsets = [pool[torch.randperm(20, generator=replay)[:9]] for _ in range(3)]
    real = [_oracle_images(s, cfg.k, 2.0, cfg.grid, cfg.sigma) for s in subsets]
    syn = _sphere(9, 5, 1)
    s0, s1 = _oracle_images(syn, cfg.k, 2.0, cfg.grid, cfg.sigma)
    r0 = np.mean([r[0] for r in real], axis=0)
    r1 = np.mean([r[1] for r in real], axis=0)
    expect = ((s0 - r0) ** 2).sum() + 0.7 * ((s1 - r1) ** 2).sum()
    assert ((s1 - r1) ** 2).sum() > 1e-3 * expect  # the H1 term matters in this case
    got = float(topology_loss([syn], target, cfg).detach())
    assert got == pytest.approx(expect, rel=1e-5)  # ripser diagrams are float32

"""Torch persistence images vs persim and a direct formula (docs/methods.md §4.6 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from persim import PersistenceImager

from reta.topology.images import persistence_images

torch.set_num_threads(1)


def _random_bars(seed: int, m: int, kappa: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    births = rng.uniform(0.0, 0.8 * kappa, m)
    deaths = births + rng.uniform(0.0, 0.5 * kappa, m)
    deaths[:3] = np.inf  # essential bars, capped at kappa
    deaths[3] = births[3]  # zero persistence
    deaths[4] = 1.3 * kappa  # finite death above the cutoff, capped too
    return births, deaths


def _persim(
    births: np.ndarray, deaths: np.ndarray, kappa: float, grid: int, sigma: float, power: float
) -> np.ndarray:
    imager = PersistenceImager(
        birth_range=(0, 1),
        pers_range=(0, 1),
        pixel_size=1 / grid,
        weight="persistence",
        weight_params={"n": power},
        kernel_params={"sigma": [[sigma**2, 0.0], [0.0, sigma**2]]},  # persim's scalar sigma is a variance
    )
    assert imager.resolution == (grid, grid)  # persim truncates int(width / pixel_size) for some G
    b = np.minimum(births, kappa) / kappa
    d = np.minimum(deaths, kappa) / kappa
    return imager.transform(np.stack([b, d], axis=1), skew=True)


@pytest.mark.parametrize(
    "grid,sigma,power", [(8, 0.2, 1.0), (20, 0.05, 1.0), (32, 0.05, 1.0), (32, 0.01, 2.0), (5, 0.5, 1.5)]
)
def test_integrated_kernel_equals_persim(grid: int, sigma: float, power: float) -> None:
    kappa = 1.7
    births, deaths = _random_bars(grid, 12, kappa)
    ours = persistence_images(
        torch.from_numpy(births)[None],
        torch.from_numpy(deaths)[None],
        torch.tensor([kappa], dtype=torch.float64),
        grid=grid,
        sigma=sigma,
        power=power,
    )[0]
    theirs = _persim(births, deaths, kappa, grid, sigma, power)
    assert ours.shape == (grid, grid) and ours.dtype == torch.float64
    assert float(ours.abs().max()) > 1e-3  # not trivially zero
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-12)


def test_sampled_kernel_equals_direct_formula() -> None:
    grid, sigma, kappa = 10, 0.1, 2.0
    births, deaths = _random_bars(3, 9, kappa)
    ours = persistence_images(
        torch.from_numpy(births)[None],
        torch.from_numpy(deaths)[None],
        torch.tensor([kappa], dtype=torch.float64),
        grid=grid,
        sigma=sigma,
        kernel="sampled",
    )[0].numpy()
    b = np.minimum(births, kappa) / kappa
    p = np.minimum(deaths, kappa) / kappa - b
    centres = (np.arange(grid) + 0.5) / grid
    expect = np.zeros((grid, grid))
    for i in range(grid):
        for j in range(grid):
            sq = (centres[i] - b) ** 2 + (centres[j] - p) ** 2
            expect[i, j] = np.sum(p * np.exp(-sq / (2 * sigma**2)))
    np.testing.assert_allclose(ours, expect, rtol=0, atol=1e-13)


def test_batched_padded_multiplicity_matches_single_images() -> None:
    kappas = [1.0, 2.5, 0.7]
    bars = [_random_bars(s, m, k) for s, m, k in zip((1, 2, 3), (6, 11, 8), kappas)]
    width = max(len(b) for b, _ in bars)
    births, deaths, mult = (
        torch.zeros(3, width, dtype=torch.float64),
        torch.zeros(3, width, dtype=torch.float64),
        torch.zeros(3, width, dtype=torch.float64),
    )
    for c, (b, d) in enumerate(bars):
        births[c, : len(b)], deaths[c, : len(b)], mult[c, : len(b)] = (
            torch.from_numpy(b),
            torch.from_numpy(d),
            0.25,
        )
    batch = persistence_images(
        births, deaths, torch.tensor(kappas, dtype=torch.float64), mult, grid=12, sigma=0.1
    )
    for c, (b, d) in enumerate(bars):
        single = persistence_images(
            torch.from_numpy(b)[None],
            torch.from_numpy(d)[None],
            torch.tensor([kappas[c]], dtype=torch.float64),
            grid=12,
            sigma=0.1,
        )[0]
        torch.testing.assert_close(batch[c], 0.25 * single, rtol=0, atol=1e-14)


def test_gradients_are_finite_and_cutoff_capping_stops_them() -> None:
    births = torch.tensor([[0.0, 0.3, 0.5, 0.2]], dtype=torch.float64, requires_grad=True)
    deaths = torch.tensor([[0.4, 0.3, 3.0, float("inf")]], dtype=torch.float64, requires_grad=True)
    pi = persistence_images(births, deaths, torch.tensor([1.0], dtype=torch.float64), grid=8, sigma=0.1)
    (pi * torch.linspace(0, 1, 64, dtype=torch.float64).view(8, 8)).sum().backward()
    assert torch.isfinite(births.grad).all() and torch.isfinite(deaths.grad).all()
    assert deaths.grad[0, 1] != 0  # zero-persistence bar: d(p^1)/dp = 1, gradient flows
    assert deaths.grad[0, 2] == 0 and deaths.grad[0, 3] == 0  # capped at the cutoff: constant
    assert deaths.grad[0, 0] != 0


def test_invalid_parameters_raise() -> None:
    b, d, k = torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1)
    with pytest.raises(ValueError, match="power"):
        persistence_images(b, d, k, power=0.5)
    with pytest.raises(ValueError, match="kernel"):
        persistence_images(b, d, k, kernel="box")
    with pytest.raises(ValueError, match="cutoff"):
        persistence_images(b, d, torch.ones(2))

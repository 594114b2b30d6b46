"""Persistence images in torch, batched over clouds (differentiable in births and deaths).

Source: docs/methods.md §4.2 "Persistence image" (persim-equivalent); Adams et al., "Persistence Images:
A Stable Vector Representation of Persistent Homology", JMLR 18 (2017); persim ``PersistenceImager``
(tests compare against it, see docs/methods.md §4.4 for its conventions).

A bar (b, d) of a cloud with cutoff κ becomes the point (b̂, p̂) = (b/κ, (d − b)/κ) on [0, 1]²,
after capping b and d at κ (essential deaths are +inf and become κ; values above κ lose their
gradient). Its weight is w = m · p̂^power (m the bar's multiplicity), power ≥ 1 (p^power with
power < 1 has an infinite derivative at p = 0). On a G × G grid with pixel edges e_i = i/G:

* ``integrated`` (default, persim): the isotropic Gaussian of std σ integrated over each pixel,
  PI[i, j] = Σ w · (Φ((e_{i+1} − b̂)/σ) − Φ((e_i − b̂)/σ)) · (Φ((e_{j+1} − p̂)/σ) − Φ((e_j − p̂)/σ));
* ``sampled`` (the paper's printed formula): PI[i, j] = Σ w · exp(−‖u_ij − (b̂, p̂)‖² / (2σ²)) at the
  pixel centres u_ij = ((i + ½)/G, (j + ½)/G), unnormalised.

Axis 0 is birth, axis 1 persistence.
"""

from __future__ import annotations

import torch

KERNELS = ("integrated", "sampled")


def normalized_points(
    births: torch.Tensor, deaths: torch.Tensor, cutoff: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(b̂, p̂) ``[B, m]`` from bars ``[B, m]`` and per-cloud cutoff ``[B]`` (capped at κ, detached κ)."""
    kappa = cutoff.detach().to(births)[:, None]
    b = torch.minimum(births, kappa)
    d = torch.minimum(deaths, kappa)
    return b / kappa, (d - b) / kappa


def _axis_profile(x: torch.Tensor, grid: int, sigma: float, kernel: str) -> torch.Tensor:
    """Per-bar 1-D kernel mass on each of the ``grid`` pixels: ``[B, m] -> [B, m, grid]``."""
    if kernel == "integrated":
        edges = torch.arange(grid + 1, dtype=x.dtype, device=x.device) / grid
        cdf = torch.special.ndtr((edges - x[..., None]) / sigma)
        return cdf[..., 1:] - cdf[..., :-1]
    if kernel == "sampled":
        centres = (torch.arange(grid, dtype=x.dtype, device=x.device) + 0.5) / grid
        return torch.exp(-((centres - x[..., None]) ** 2) / (2.0 * sigma * sigma))
    raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")


def _validate(grid: int, sigma: float, power: float, kernel: str) -> None:
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if power < 1:
        raise ValueError(f"weight power must be >= 1 (infinite derivative at p = 0 otherwise), got {power}")
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")


def persistence_images(
    births: torch.Tensor,
    deaths: torch.Tensor,
    cutoff: torch.Tensor,
    multiplicity: torch.Tensor | None = None,
    grid: int = 32,
    sigma: float = 0.05,
    power: float = 1.0,
    kernel: str = "integrated",
) -> torch.Tensor:
    """Persistence images ``[B, grid, grid]`` of padded bars ``births/deaths [B, m]``.

    ``cutoff [B]`` is κ per cloud; ``multiplicity [B, m]`` weights each bar (0 for padding; default 1).
    Essential bars carry death = +inf and are capped at κ.
    """
    _validate(grid, sigma, power, kernel)
    if births.shape != deaths.shape or births.dim() != 2:
        raise ValueError(
            f"births/deaths must both be [B, m], got {tuple(births.shape)} and {tuple(deaths.shape)}"
        )
    if cutoff.shape != births.shape[:1]:
        raise ValueError(f"cutoff must be [B] = {births.shape[0]}, got {tuple(cutoff.shape)}")
    bhat, phat = normalized_points(births, deaths, cutoff)
    weight = phat if power == 1 else phat.pow(power)
    if multiplicity is not None:
        weight = weight * multiplicity.to(weight)
    kb = _axis_profile(bhat, grid, sigma, kernel)
    kp = _axis_profile(phat, grid, sigma, kernel)
    return torch.einsum("bm,bmi,bmj->bij", weight, kb, kp)

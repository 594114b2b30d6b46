"""DM / IDM / IID losses (reta.synthesis.dm.losses) against direct float64 computations (docs/methods.md §6)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reta.synthesis.dm.losses import (
    centralization_loss,
    channel_covariance,
    class_aware_ce,
    covariance_matching_loss,
    iid_inert,
    mean_embedding_loss,
)


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def direct_covariance(f: torch.Tensor) -> torch.Tensor:
    """Σ[c, c'] = (1/N) Σ_n Σ_p (F[n,c,p] − mean_n F[·,c,p]) (F[n,c',p] − mean_n F[·,c',p]), by loops, float64."""
    f = f.double().flatten(2)
    n, c, p = f.shape
    mu = [[sum(f[k, i, q].item() for k in range(n)) / n for q in range(p)] for i in range(c)]
    out = torch.zeros(c, c, dtype=torch.float64)
    for i in range(c):
        for j in range(c):
            s = 0.0
            for k in range(n):
                for q in range(p):
                    s += (f[k, i, q].item() - mu[i][q]) * (f[k, j, q].item() - mu[j][q])
            out[i, j] = s / n
    return out


def test_mean_embedding_loss_is_sum_of_squared_mean_difference():
    real, syn = rand(7, 3, 2, 2, seed=1), rand(4, 3, 2, 2, seed=2)
    want = ((real.double().flatten(1).mean(0) - syn.double().flatten(1).mean(0)) ** 2).sum()
    assert torch.allclose(mean_embedding_loss(real, syn).double(), want, rtol=1e-5)


def test_mean_embedding_loss_detaches_real():
    real = rand(5, 8, seed=1).requires_grad_(True)
    syn = rand(3, 8, seed=2).requires_grad_(True)
    mean_embedding_loss(real, syn).backward()
    assert real.grad is None and syn.grad is not None and syn.grad.abs().sum() > 0


def test_channel_covariance_matches_direct_float64():
    f = rand(5, 4, 3, 3, seed=3)  # N=5, C=4, P=9
    got = channel_covariance(f.double())
    assert torch.allclose(got, direct_covariance(f), atol=1e-10)
    assert torch.allclose(got, got.T)


def test_covariance_term_equals_direct_float64_computation():
    real, syn = rand(6, 3, 2, 2, seed=4), rand(3, 3, 2, 2, seed=5)
    want = ((direct_covariance(real) - direct_covariance(syn)) ** 2).sum()
    got = covariance_matching_loss(real.double(), syn.double())
    assert torch.allclose(got, want, rtol=1e-10)
    # float32 path agrees to single precision
    assert torch.allclose(covariance_matching_loss(real, syn).double(), want, rtol=1e-4)


def test_covariance_is_biased_summed_over_positions_not_a_correlation():
    f = torch.zeros(2, 1, 1, 2, dtype=torch.float64)  # one channel, two positions
    f[0, 0, 0, :] = torch.tensor([1.0, 3.0])
    f[1, 0, 0, :] = torch.tensor([-1.0, -3.0])
    # centred already; (1/N) Σ_n Σ_p F² = (1 + 9 + 1 + 9) / 2 = 10
    assert channel_covariance(f).item() == pytest.approx(10.0)


def test_covariance_gradient_flows_to_synthetic_only():
    real = rand(6, 3, 2, 2, seed=6).requires_grad_(True)
    syn = rand(3, 3, 2, 2, seed=7).requires_grad_(True)
    covariance_matching_loss(real, syn).backward()
    assert real.grad is None and syn.grad.abs().sum() > 0


def test_one_synthetic_image_makes_the_covariance_term_constant():
    real = rand(6, 3, 2, 2, seed=8)
    syn = rand(1, 3, 2, 2, seed=9).requires_grad_(True)
    loss = covariance_matching_loss(real, syn)
    assert torch.allclose(loss, (channel_covariance(real) ** 2).sum())  # Σ_syn = 0
    loss.backward()
    assert syn.grad.abs().max() == 0


def test_centralization_is_zero_when_all_features_of_a_class_are_equal():
    # dyadic values: the batch mean is exact, so the loss is exactly 0 (and its gradient too)
    g = (rand(1, 16, seed=10) * 8).round().div(8).expand(4, 16).clone().requires_grad_(True)
    assert centralization_loss(g).item() == 0.0
    assert centralization_loss(g, form="exp", alpha=0.02, beta=1.0).item() == 0.0
    centralization_loss(g).backward()
    assert g.grad.abs().max() == 0
    # arbitrary values: 0 up to the rounding of the mean
    g = rand(1, 16, seed=11).expand(5, 16)
    assert centralization_loss(g).item() < 1e-10


def test_centralization_linear_form_is_total_squared_spread():
    g = rand(4, 6, seed=11, dtype=torch.float64)
    want = sum(((g[i] - g.mean(0)) ** 2).sum() for i in range(4))
    assert torch.allclose(centralization_loss(g), want)


def test_centralization_exp_form():
    g = rand(4, 6, seed=12, dtype=torch.float64)
    d = ((g - g.mean(0)) ** 2).sum(1)
    want = torch.clamp(torch.exp(0.02 * d) - 0.5, min=0).sum()
    assert torch.allclose(centralization_loss(g, "exp", 0.02, 0.5), want)
    with pytest.raises(ValueError, match="unknown L_CC form"):
        centralization_loss(g, "quadratic")


def test_centralization_mean_is_not_detached():
    """ḡ is the batch's own mean, not a constant: the gradient of Σ‖g_i − ḡ‖² is 2(g_i − ḡ), which sums to 0."""
    g = rand(5, 3, seed=13, dtype=torch.float64).requires_grad_(True)
    centralization_loss(g).backward()
    assert torch.allclose(g.grad, 2 * (g - g.mean(0)).detach())
    assert torch.allclose(g.grad.sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)


def test_class_aware_ce_scales_with_accuracy_percent():
    logits = rand(4, 10, seed=14)
    base = F.cross_entropy(logits, torch.full((4,), 3))
    assert torch.allclose(class_aware_ce(logits, 3, 80.0), 80.0 * base)
    assert class_aware_ce(logits, 3, 0.0).item() == 0.0


def test_iid_inert_only_for_one_image_per_class():
    assert iid_inert(1) and not iid_inert(2) and not iid_inert(4)

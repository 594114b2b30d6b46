"""DRC math: anchor complexity, fit–complexity score and retrieval with reuse policies (docs/methods.md §4.1, §4.6)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from reta.synthesis.reta.retrieval import (
    confidence_cost,
    fit_complexity_scores,
    gaussian_kernel1d,
    image_complexity,
    image_gradients,
    luma,
    normalize_complexity,
    retrieve,
)

torch.set_num_threads(1)


def _checkerboard(size: int = 32, block: int = 4) -> torch.Tensor:
    idx = torch.arange(size) // block
    return ((idx[:, None] + idx[None, :]) % 2).float().view(1, 1, size, size)


def _ramp(size: int = 32) -> torch.Tensor:
    return torch.linspace(0, 1, size).view(1, 1, 1, size).expand(1, 1, size, size).clone()


@pytest.mark.parametrize("gradient", ["central", "sobel"])
def test_constant_image_has_zero_complexity(gradient: str) -> None:
    images = torch.full((2, 3, 16, 16), 0.37)
    c = image_complexity(images, gradient=gradient)
    assert c.shape == (2,) and float(c.abs().max()) < 1e-12


@pytest.mark.parametrize("gradient", ["central", "sobel"])
def test_checkerboard_is_more_complex_than_a_ramp(gradient: str) -> None:
    c = image_complexity(torch.cat([_checkerboard(), _ramp()]), gradient=gradient)
    assert c[0] > 10 * c[1] > 0


def test_complexity_is_batched_and_luma_weighted() -> None:
    gen = torch.Generator().manual_seed(0)
    rgb = torch.rand(4, 3, 20, 20, generator=gen)
    batched = image_complexity(rgb)
    singles = torch.cat([image_complexity(rgb[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, singles)
    grey = 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]
    torch.testing.assert_close(luma(rgb), grey)
    torch.testing.assert_close(image_complexity(rgb), image_complexity(grey))
    assert torch.equal(luma(grey), grey)
    with pytest.raises(ValueError):
        luma(torch.rand(1, 2, 8, 8))


def test_complexity_matches_a_direct_computation() -> None:
    img = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    k = gaussian_kernel1d(1.0, torch.float64)
    assert len(k) == 7 and float(k.sum()) == pytest.approx(1.0)
    padded = F.pad(img, (3, 3, 3, 3), mode="reflect")[0, 0]
    blur = torch.zeros(12, 12, dtype=torch.float64)
    for i in range(12):
        for j in range(12):
            blur[i, j] = (padded[i : i + 7, j : j + 7] * (k[:, None] * k[None, :])).sum()
    p = F.pad(blur[None, None], (1, 1, 1, 1), mode="reflect")[0, 0]
    gx = (p[1:-1, 2:] - p[1:-1, :-2]) / 2
    gy = (p[2:, 1:-1] - p[:-2, 1:-1]) / 2
    energy = gx**2 + gy**2
    expect = ((energy - energy.mean()) ** 2).mean()
    torch.testing.assert_close(image_complexity(img)[0], expect, rtol=1e-10, atol=1e-14)


def test_gradients_of_a_linear_ramp_are_its_slope_inside() -> None:
    ramp = torch.arange(10, dtype=torch.float64).view(1, 1, 1, 10).expand(1, 1, 6, 10)
    for method in ("central", "sobel"):
        gx, gy = image_gradients(ramp, method)
        torch.testing.assert_close(gx[..., 1:-1], torch.ones_like(gx[..., 1:-1]))
        assert float(gy.abs().max()) == 0.0


def test_invalid_complexity_input_raises() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        image_complexity(torch.full((1, 1, 16, 16), 1.5))
    with pytest.raises(ValueError, match="too small"):
        image_complexity(torch.rand(1, 1, 3, 3))
    with pytest.raises(ValueError):
        image_gradients(torch.rand(1, 1, 8, 8), "prewitt")


def test_normalisation_minmax_median_and_constant_pool() -> None:
    c = torch.tensor([2.0, 4.0, 3.0, 10.0])
    torch.testing.assert_close(normalize_complexity(c), torch.tensor([0.0, 0.25, 0.125, 1.0]))
    torch.testing.assert_close(normalize_complexity(c, "median"), c / 3.5)
    assert torch.equal(normalize_complexity(torch.full((5,), 7.0)), torch.zeros(5))
    with pytest.raises(ValueError):
        normalize_complexity(c, "zscore")


def test_score_formula() -> None:
    gen = torch.Generator().manual_seed(2)
    q, z = torch.randn(3, 8, generator=gen), torch.randn(5, 8, generator=gen)
    c_hat = torch.rand(5, generator=gen)
    scores = fit_complexity_scores(q, z, c_hat, 0.3)
    qn, zn = F.normalize(q, dim=1), F.normalize(z, dim=1)
    expect = 0.7 * ((qn[:, None] - zn[None]) ** 2).sum(-1) + 0.3 * c_hat[None]
    torch.testing.assert_close(scores, expect)
    with pytest.raises(ValueError):
        fit_complexity_scores(q, z, c_hat, 1.5)


def _pool(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(4, 16, generator=gen),
        torch.randn(12, 16, generator=gen),
        torch.rand(12, generator=gen),
    )


def test_lambda_zero_is_feature_nearest_neighbour() -> None:
    q, z, c = _pool()
    result = retrieve(q, z, c, lam=0.0)
    cos = F.normalize(q, dim=1) @ F.normalize(z, dim=1).T
    assert torch.equal(result.indices, cos.argmax(dim=1))
    torch.testing.assert_close(result.scores, 2 - 2 * cos.max(dim=1).values)


def test_lambda_one_is_least_complex_anchor() -> None:
    q, z, c = _pool()
    result = retrieve(q, z, c, lam=1.0)
    assert torch.equal(result.indices, torch.full((4,), int(c.argmin())))
    torch.testing.assert_close(result.scores, torch.zeros(4))  # min-max normalised: the minimum is 0


def test_allow_reuses_and_per_connection_is_greedy_in_slot_order() -> None:
    _, z, c = _pool()
    q = z[[5, 5, 9]] + 1e-3  # slots 0 and 1 both want anchor 5
    allow = retrieve(q, z, c, lam=0.0, reuse="allow", used={5})  # 'used' has no effect under allow
    assert allow.indices.tolist() == [5, 5, 9]
    greedy = retrieve(q, z, c, lam=0.0, reuse="per_connection")
    scores = fit_complexity_scores(q, z, normalize_complexity(c), 0.0)
    second = int(scores[1].masked_fill(torch.arange(12) == 5, float("inf")).argmin())
    assert greedy.indices.tolist() == [5, second, 9]
    torch.testing.assert_close(greedy.scores, scores[torch.arange(3), greedy.indices])
    assert not greedy.fell_back.any()


def test_never_excludes_used_anchors_and_leaves_used_unchanged() -> None:
    q, z, c = _pool()
    used = set(retrieve(q, z, c, lam=0.1).indices.tolist())
    frozen = set(used)
    result = retrieve(q, z, c, lam=0.1, reuse="never", used=used)
    assert used == frozen
    assert not set(result.indices.tolist()) & used
    assert len(set(result.indices.tolist())) == 4


def test_exhausted_pool_falls_back_to_allow_with_a_warning() -> None:
    q, z, c = _pool()
    with pytest.warns(UserWarning, match="falls back"):
        result = retrieve(q, z[:3], c[:3], lam=0.1, reuse="per_connection", used={0})
    assert result.fell_back.tolist() == [False, False, True, True]
    allow = retrieve(q, z[:3], c[:3], lam=0.1)
    assert result.indices[2:].tolist() == allow.indices[2:].tolist()
    assert len(set(result.indices[:2].tolist()) | {0}) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        retrieve(q, z, c, lam=0.1, reuse="never", used={0})  # enough anchors: no warning
    with pytest.raises(ValueError):
        retrieve(q, z, c, lam=0.1, reuse="sometimes")
    with pytest.raises(ValueError):
        retrieve(q, z, c, lam=0.1, reuse="never", used={99})


def test_incumbent_wins_ties_and_is_kept_within_the_margin_only() -> None:
    q, z, c = _pool()
    plain = retrieve(q, z, c, lam=0.1)
    scores = fit_complexity_scores(q, z, normalize_complexity(c), 0.1)
    # each slot's incumbent: its second-best entry, so the gap to the argmin is known
    second = scores.masked_fill(torch.nn.functional.one_hot(plain.indices, 12).bool(), float("inf")).argmin(1)
    gap = scores[torch.arange(4), second] - plain.scores
    assert (gap > 0).all()
    inc = second.tolist()
    zero = retrieve(q, z, c, lam=0.1, incumbent=inc, margin=0.0)
    assert torch.equal(zero.indices, plain.indices)  # a strictly better entry still wins at margin 0
    wide = retrieve(q, z, c, lam=0.1, incumbent=inc, margin=float(gap.max()))
    assert wide.indices.tolist() == inc  # every incumbent within the margin is kept
    torch.testing.assert_close(wide.scores, scores[torch.arange(4), second])
    mid = float(gap.sort().values[1])  # keeps the two slots with the smallest gaps, only those
    kept = retrieve(q, z, c, lam=0.1, incumbent=inc, margin=mid)
    expect = [inc[i] if float(gap[i]) <= mid else int(plain.indices[i]) for i in range(4)]
    assert kept.indices.tolist() == expect and expect != inc and expect != plain.indices.tolist()
    none = retrieve(q, z, c, lam=0.1, incumbent=[None] * 4, margin=1e9)  # no own anchor in the pool: paper argmin
    assert torch.equal(none.indices, plain.indices)


def test_incumbent_wins_an_exact_tie_and_respects_exclusions() -> None:
    _, z, c = _pool()
    zz = torch.cat([z, z[:1]])  # entry 12 duplicates entry 0: identical score
    cc = torch.cat([c, c[:1]])
    q = z[:1].clone()
    assert int(retrieve(q, zz, cc, lam=0.0).indices[0]) == 0  # argmin takes the first of a tie
    assert int(retrieve(q, zz, cc, lam=0.0, incumbent=[12]).indices[0]) == 12  # the own anchor wins the tie
    # an excluded incumbent is not kept (reuse policy first)
    r = retrieve(q, zz, cc, lam=0.0, reuse="never", used={12}, incumbent=[12], margin=1e9)
    assert int(r.indices[0]) == 0
    with pytest.raises(ValueError, match="margin"):
        retrieve(q, zz, cc, lam=0.0, incumbent=[0], margin=-1.0)


def test_confidence_cost_penalises_low_confidence_entries() -> None:
    q, z, c = _pool()
    ranks = torch.arange(12)
    cost = confidence_cost(ranks, 12)
    assert float(cost[0]) == 0.0 and float(cost[-1]) == 1.0 and (cost.diff() > 0).all()
    base = fit_complexity_scores(q, z, normalize_complexity(c), 0.1)
    r = retrieve(q, z, c, lam=0.1, pool_confidence=cost, mu=0.5)
    expect = base + 0.5 * cost[None, :]
    assert torch.equal(r.indices, expect.argmin(1))
    torch.testing.assert_close(r.scores, expect.min(1).values)
    huge = retrieve(q, z, c, lam=0.1, pool_confidence=cost, mu=1e3)
    assert huge.indices.tolist() == [0, 0, 0, 0]  # confidence dominates: the teacher's most confident crop
    with pytest.raises(ValueError):
        confidence_cost(torch.tensor([12]), 12)
    with pytest.raises(ValueError):
        retrieve(q, z, c, lam=0.1, mu=0.5)  # mu without the per-entry cost

"""Differentiable Siamese Augmentation (reta.data.dsa): determinism, Siamese sharing, gradients, op semantics."""

from __future__ import annotations

import math

import pytest
import torch

from reta.data.dsa import DSA, DSA_OPS, DSAParams, DSASample

torch.set_num_threads(1)

FAMILIES = ["color", "crop", "cutout", "flip", "scale", "rotate"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(
    b: int = 8, c: int = 3, h: int = 16, w: int = 16, seed: int = 0, dtype=torch.float32
) -> torch.Tensor:
    # normalised-space values: zero mean, negative entries
    return torch.randn(b, c, h, w, generator=gen(1000 + seed), dtype=dtype)


def only(op: str, **kw) -> DSA:
    return DSA(DSAParams(strategy=op, **kw))


# ---------------------------------------------------------------- parameters


def test_defaults_match_methods_6_1():
    p = DSAParams()
    assert p.strategy == "color_crop_cutout_flip_scale_rotate" and p.single_op is True
    assert (p.flip_p, p.scale, p.rotate, p.crop_pad, p.cutout) == (0.5, 1.2, 15.0, 0.125, 0.5)
    assert (p.brightness, p.saturation, p.contrast) == (1.0, 2.0, 0.5)
    assert set(p.ops) == set(DSA_OPS) == set(FAMILIES)


def test_unknown_op_raises_listing_valid_ops():
    with pytest.raises(ValueError) as e:
        DSAParams(strategy="color_jitter_flip")
    msg = str(e.value)
    assert "jitter" in msg
    for op in FAMILIES:
        assert op in msg


@pytest.mark.parametrize(
    "kw",
    [
        {"flip_p": 1.5},
        {"scale": 0.0},
        {"crop_pad": -0.1},
        {"cutout": 2.0},
        {"rotate": -1.0},
        {"strategy": "flip_flip"},
    ],
)
def test_bad_numbers_raise(kw):
    with pytest.raises(ValueError):
        DSAParams(**kw)


def test_none_strategy_is_identity():
    x = batch()
    for s in ("none", "None", ""):
        assert torch.equal(DSA(DSAParams(strategy=s))(x, gen(0)), x)


# ---------------------------------------------------------------- determinism and the Siamese property


@pytest.mark.parametrize("shared", [False, True])
def test_same_seed_same_output_on_clone(shared):
    dsa = DSA()
    x = batch()
    seen = set()
    for seed in range(24):
        a = dsa(x, gen(seed), shared=shared)
        b = dsa(x.clone(), gen(seed), shared=shared)
        assert torch.equal(a, b)
        seen.add(dsa.draw(8, gen(seed), shared=shared).ops)
    assert len(seen) == len(FAMILIES)  # every family exercised


@pytest.mark.parametrize("seed", range(18))
def test_shared_real_and_synthetic_batches_of_different_size_get_identical_transform(seed):
    dsa = DSA()
    syn = batch(3, seed=seed)
    real = batch(8, seed=50 + seed)
    slots = [6, 1, 3]
    real[slots] = syn  # the real batch contains the synthetic images
    out_real = dsa(real, gen(seed), shared=True)
    out_syn = dsa(syn, gen(seed), shared=True)
    torch.testing.assert_close(out_syn, out_real[slots], atol=1e-6, rtol=1e-6)
    # the siamese() helper is the same thing
    r2, s2 = dsa.siamese(real, syn, seed=seed)
    assert torch.equal(r2, out_real) and torch.equal(s2, out_syn)


def test_shared_applies_one_transform_to_every_image():
    x = batch(1).expand(6, -1, -1, -1).contiguous()
    for op in FAMILIES:
        out = only(op, flip_p=0.5)(x, gen(3), shared=True)
        assert torch.allclose(out, out[:1].expand_as(out), atol=1e-6), op


@pytest.mark.parametrize("op", ["color", "crop", "cutout", "scale", "rotate"])
def test_per_sample_mode_varies_across_images(op):
    x = batch(1).expand(8, -1, -1, -1).contiguous()
    out = only(op)(x, gen(0), shared=False)
    assert not torch.allclose(out, out[:1].expand_as(out), atol=1e-4), op


@pytest.mark.parametrize("op", FAMILIES)
def test_different_seeds_differ(op):
    x = batch()
    dsa = only(op)
    assert not torch.allclose(dsa(x, gen(0)), dsa(x, gen(1)))


def test_default_strategy_different_seeds_differ_and_generator_advances():
    x = batch()
    dsa = DSA()
    assert not torch.allclose(dsa(x, gen(0)), dsa(x, gen(1)))
    g = gen(0)
    assert not torch.allclose(dsa(x, g), dsa(x, g))


def test_single_op_draws_one_family_uniformly_and_multi_applies_all_in_order():
    dsa = DSA()
    g = gen(0)
    counts = dict.fromkeys(FAMILIES, 0)
    for _ in range(600):
        s = dsa.draw(4, g)
        assert len(s.ops) == 1
        counts[s.ops[0]] += 1
    assert all(60 <= n <= 140 for n in counts.values()), counts
    multi = DSA(DSAParams(strategy="flip_color_scale", single_op=False)).draw(5, gen(0))
    assert multi.ops == ("flip", "color", "scale")
    assert {k: tuple(v.shape) for k, v in multi.uniforms.items()} == {
        "flip": (5, 1),
        "color": (5, 3),
        "scale": (5, 2),
    }
    out = DSA(DSAParams(single_op=False))(batch(), gen(0))
    assert out.shape == (8, 3, 16, 16) and torch.isfinite(out).all()


def test_per_sample_draw_on_wrong_batch_size_raises():
    dsa = only("rotate")
    s = dsa.draw(8, gen(0), shared=False)
    with pytest.raises(ValueError, match="shared=True"):
        dsa.apply(batch(3), s)


# ---------------------------------------------------------------- gradients, shapes, no in-place


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("op", FAMILIES)
def test_gradient_flows_for_every_family(op, shared):
    x = batch(4).requires_grad_(True)
    x_before = x.detach().clone()
    out = only(op, flip_p=1.0)(x, gen(0), shared=shared)
    w = torch.randn(out.shape, generator=gen(7))
    (out * w).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    assert torch.equal(x.detach(), x_before)  # x untouched


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("op", FAMILIES)
def test_shape_dtype_device_preserved(op, dtype):
    for c, h, w in [(3, 16, 16), (1, 12, 20)]:
        x = batch(5, c, h, w, dtype=dtype)
        out = only(op)(x, gen(0))
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
        assert torch.isfinite(out).all()


# ---------------------------------------------------------------- op semantics (reference behaviour)


def test_identity_parameters_give_identity():
    x = batch()
    torch.testing.assert_close(only("scale", scale=1.0)(x, gen(0)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(only("rotate", rotate=0.0)(x, gen(0)), x, atol=1e-5, rtol=0)
    assert torch.equal(only("crop", crop_pad=0.0)(x, gen(0)), x)
    assert torch.equal(only("cutout", cutout=0.0)(x, gen(0)), x)
    assert torch.equal(only("flip", flip_p=0.0)(x, gen(0)), x)
    flip = only("flip", flip_p=1.0)
    assert torch.equal(flip(x, gen(0)), x.flip(3))
    assert torch.equal(flip(flip(x, gen(0)), gen(1)), x)
    # colour with all uniforms at 0.5: brightness +0, saturation x1 (2.0 * 0.5), contrast x1 (0.5 + 0.5)
    s = DSASample(ops=("color",), uniforms={"color": torch.full((1, 3), 0.5)}, shared=True)
    torch.testing.assert_close(DSA().apply(x, s), x, atol=1e-5, rtol=0)


def test_color_formulas():
    x = batch(2)
    u = torch.tensor([[0.9, 0.2, 0.1], [0.3, 0.7, 0.6]])
    out = DSA().apply(x, DSASample(ops=("color",), uniforms={"color": u}, shared=False))
    ref = x + (u[:, 0] - 0.5).view(-1, 1, 1, 1) * 1.0
    mc = ref.mean(1, keepdim=True)
    ref = (ref - mc) * (u[:, 1] * 2.0).view(-1, 1, 1, 1) + mc
    m = ref.mean((1, 2, 3), keepdim=True)
    ref = (ref - m) * (u[:, 2] + 0.5).view(-1, 1, 1, 1) + m
    torch.testing.assert_close(out, ref)


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[i, j] = x[i + dy, j + dx], zero outside."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def test_crop_is_zero_filled_integer_translation_within_pad():
    x = batch(6, 2, 16, 16)
    out = only("crop")(x, gen(5))
    s = int(16 * 0.125 + 0.5)  # 2
    shifts = set()
    for i in range(6):
        match = [
            (dy, dx)
            for dy in range(-s, s + 1)
            for dx in range(-s, s + 1)
            if torch.equal(out[i], _shift(x[i], dy, dx))
        ]
        assert len(match) == 1, i
        shifts.add(match[0])
    assert len(shifts) > 1  # per-sample


def test_cutout_zeros_one_clipped_square_of_the_reference_side():
    h = w = 16
    side = int(h * 0.5 + 0.5)
    x = batch(32, 3, h, w) + 10.0  # no natural zeros
    out = only("cutout")(x, gen(2))
    clipped = 0
    for i in range(32):
        zero = (out[i] == 0).all(0)
        assert torch.equal(out[i][:, ~zero], x[i][:, ~zero])  # the rest untouched
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        nr, nc = len(rows), len(cols)
        assert 0 < nr <= side and 0 < nc <= side
        assert int(zero.sum()) == nr * nc  # a rectangle
        assert rows.max() - rows.min() + 1 == nr and cols.max() - cols.min() + 1 == nc
        # a side shorter than `side` only where the square touches the border
        assert nr == side or rows.min() == 0 or rows.max() == h - 1
        assert nc == side or cols.min() == 0 or cols.max() == w - 1
        clipped += (nr < side) or (nc < side)
    assert 0 < clipped < 32


def test_scale_and_rotate_match_affine_grid_reference():
    x = batch(3)
    u = torch.tensor([[0.0, 1.0], [0.25, 0.5], [0.9, 0.1]])
    out = DSA().apply(x, DSASample(ops=("scale",), uniforms={"scale": u}, shared=False))
    r = 1.2
    s = u * (r - 1 / r) + 1 / r
    theta = torch.zeros(3, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = s[:, 0], s[:, 1]
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    ref = torch.nn.functional.grid_sample(x, grid, align_corners=False)
    torch.testing.assert_close(out, ref)

    a = torch.tensor([[0.0], [0.5], [0.99]])
    out = DSA().apply(x, DSASample(ops=("rotate",), uniforms={"rotate": a}, shared=False))
    ang = (a[:, 0] - 0.5) * 2 * 15.0 * math.pi / 180
    theta = torch.zeros(3, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = ang.cos(), -ang.sin()
    theta[:, 1, 0], theta[:, 1, 1] = ang.sin(), ang.cos()
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    ref = torch.nn.functional.grid_sample(x, grid, align_corners=False)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out[1], x[1], atol=1e-5, rtol=0)  # u = 0.5 -> 0 degrees


def test_rotate_90_maps_corners_as_expected():
    # sanity of orientation: a 90-degree grid rotation permutes pixels exactly (square image, align_corners=False)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    dsa = DSA(DSAParams(strategy="rotate", rotate=90.0))
    out = dsa.apply(x, DSASample(ops=("rotate",), uniforms={"rotate": torch.tensor([[1.0]])}, shared=True))
    torch.testing.assert_close(out, torch.rot90(x, k=1, dims=(2, 3)), atol=1e-4, rtol=0)


def test_no_generator_uses_global_rng():
    x = batch()
    dsa = DSA()
    torch.manual_seed(11)
    a = dsa(x)
    torch.manual_seed(11)
    assert torch.equal(dsa(x), a)

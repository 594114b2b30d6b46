"""Frozen-backbone family math: SFM's constant flows are the CE gradient of a zero linear head (float64), the global
SFM loss is LGM's loss at W = 0, LGM's matched-gradient loss equals a direct closed-form autograd computation, the
pyramid decodes to the right shape and range and passes gradients, and bad method keys fail in one line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from reta.errors import RetaError
from reta.synthesis.frozen.augment import AugSpec, aug_standard
from reta.synthesis.frozen.family import spec_for
from reta.synthesis.frozen.losses import (
    class_means,
    flows_from_means,
    flows_from_sums,
    head_gradients,
    lgm_loss,
    sfm_loss,
)
from reta.synthesis.frozen.pyramid import PixelImages, PyramidImages, level_sides

from helpers import CONF_DIR

AUG = AugSpec(rrc_scale_min=0.08, flip=True, noise_std=0.2, noise_mean=0.5, noise_p=0.5)


def _lgm_yaml() -> dict:
    values = OmegaConf.to_container(OmegaConf.load(f"{CONF_DIR}/method/lgm.yaml"))
    values.pop("defaults")
    return values


def _features(n_per_class, c, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(c).repeat_interleave(n_per_class)
    z = torch.randn(len(y), d, generator=g, dtype=dtype) + 3 * torch.randn(c, d, generator=g, dtype=dtype)[y]
    return z, y


def _sums(z, y, c):
    sums = torch.zeros(c, z.shape[1], dtype=torch.float64).index_add_(0, y, z)
    return sums, torch.bincount(y, minlength=c).double()


def test_sfm_target_flow_is_the_ce_gradient_at_zero_up_to_its_constant():
    c, d = 5, 16
    z, y = _features(7, c, d, seed=0)
    w = torch.zeros(c, d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(c, dtype=torch.float64, requires_grad=True)
    g = head_gradients(z, y, w, b, create_graph=False)
    gw, gb = g[: c * d].view(c, d), g[c * d :]
    flows = flows_from_sums(*_sums(z, y, c))
    torch.testing.assert_close(gw, (c - 1) / c**2 * flows, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gb, torch.zeros(c, dtype=torch.float64), rtol=0, atol=1e-15)
    # the balanced synthetic form (mean of the other class means) is the same flow
    torch.testing.assert_close(flows_from_means(class_means(z, y, c)), flows, rtol=1e-12, atol=1e-12)


def test_imbalanced_flows_use_non_target_samples_and_match_the_general_gradient():
    c, d = 4, 6
    g = torch.Generator().manual_seed(1)
    y = torch.tensor([0] * 3 + [1] * 9 + [2] * 5 + [3] * 2)
    z = torch.randn(len(y), d, generator=g, dtype=torch.float64)
    sums, counts = _sums(z, y, c)
    flows = flows_from_sums(sums, counts)
    for k in range(c):
        torch.testing.assert_close(flows[k], z[y != k].mean(0) - z[y == k].mean(0), rtol=1e-12, atol=1e-12)
    w = torch.zeros(c, d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(c, dtype=torch.float64, requires_grad=True)
    gw = head_gradients(z, y, w, b, create_graph=False)[: c * d].view(c, d)
    pi = counts / counts.sum()
    torch.testing.assert_close(gw, z.mean(0) / c - pi[:, None] * (sums / counts[:, None]), rtol=1e-12, atol=1e-12)


def test_sfm_global_loss_equals_lgm_loss_at_zero_head():
    c, d = 5, 8
    z_real, y_real = _features(20, c, d, seed=2)
    z_syn, y_syn = _features(2, c, d, seed=3)
    w, b = torch.zeros(c, d, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    lgm = lgm_loss(z_real, y_real, z_syn, y_syn, w, b)
    sfm = sfm_loss(flows_from_means(class_means(z_syn, y_syn, c)), flows_from_sums(*_sums(z_real, y_real, c)), "global")
    torch.testing.assert_close(lgm, sfm, rtol=1e-10, atol=1e-12)
    per_class = sfm_loss(flows_from_means(class_means(z_syn, y_syn, c)), flows_from_sums(*_sums(z_real, y_real, c)),
                         "per_class")
    assert 0 < float(per_class) < 2 and not torch.isclose(per_class, sfm)


def test_lgm_loss_and_its_image_gradient_equal_a_direct_closed_form_autograd_computation():
    c, d = 4, 10
    z_real, y_real = _features(6, c, d, seed=4)
    z0, y_syn = _features(2, c, d, seed=5)
    g = torch.Generator().manual_seed(6)
    w, b = torch.randn(c, d, generator=g, dtype=torch.float64) * 0.01, torch.zeros(c, dtype=torch.float64)

    z_a = z0.clone().requires_grad_(True)
    ours = lgm_loss(z_real, y_real, z_a, y_syn, w, b)
    ours.backward()

    def closed_form_grad(z, y):  # ∇_W CE = (softmax − onehot)ᵀ z / N, ∇_b = mean(softmax − onehot)
        e = torch.softmax(z @ w.t() + b, 1) - F.one_hot(y, c).double()
        return torch.cat([(e.t() @ z / len(y)).flatten(), e.mean(0)])

    z_b = z0.clone().requires_grad_(True)
    direct = 1 - F.cosine_similarity(closed_form_grad(z_real, y_real), closed_form_grad(z_b, y_syn), dim=0)
    direct.backward()
    torch.testing.assert_close(ours, direct, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(z_a.grad, z_b.grad, rtol=1e-9, atol=1e-12)
    assert z_a.grad.abs().sum() > 0


def test_pyramid_decode_shape_range_gradients_and_extension():
    assert level_sides(28) == [1, 2, 4, 8, 16, 28] and level_sides(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    g = torch.Generator().manual_seed(0)
    for channels in (1, 3):
        p = PyramidImages(6, channels, 28, g)
        x = p.decode()
        assert x.shape == (6, channels, 28, 28) and float(x.detach().min()) > 0 and float(x.detach().max()) < 1
        x.sum().backward()
        assert p.levels[0].grad is not None and p.levels[0].grad.abs().sum() > 0
        assert all(lv.grad is None for lv in p.levels[1:]), "inactive levels take no part"
        before = p.levels[0].detach().clone()
        while p.extend(g):
            pass
        assert p.num_active == 6 and not p.extend(g)
        torch.testing.assert_close(p.levels[0].detach(), before / 6)  # scaled 1/2 · 2/3 · … · 5/6
        p.zero_grad()
        p.decode()[:, :, 3, 5].sum().backward()
        assert all(lv.grad is not None and lv.grad.abs().sum() > 0 for lv in p.levels)


def test_pixel_parameterisation_round_trips_and_aug_is_seeded_and_differentiable():
    pix = torch.rand(4, 1, 28, 28)
    p = PixelImages(pix, 2, 2, [0.3], [0.4])
    torch.testing.assert_close(p.decode(), pix, rtol=1e-5, atol=1e-6)
    x = p.decode()
    a = aug_standard(x, AUG, torch.Generator().manual_seed(3))
    b = aug_standard(x.detach(), AUG, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.detach(), b)
    a.sum().backward()
    assert p.images.data.grad.abs().sum() > 0


def test_bad_method_keys_and_values_fail_in_one_line():
    base = {**_lgm_yaml(), "name": "sfm", "loss": "sfm"}
    with pytest.raises(RetaError, match=r"unknown keys \['iteratons'\]; valid: .*iterations"):
        spec_for({**base, "iteratons": 5}, 1)
    with pytest.raises(RetaError, match="variant='pairs' unknown; valid: global, per_class"):
        spec_for({**base, "variant": "pairs"}, 1)
    with pytest.raises(RetaError, match=r"aug: unknown keys \['blur'\]"):
        spec_for({**base, "aug": {"blur": 1}}, 1)
    assert spec_for({**base, "per_ipc": {10: {"iterations": 7}}}, 10).iterations == 7
    assert spec_for({**base, "per_ipc": {10: {"iterations": 7}}}, 1).iterations == 1000
    with pytest.raises(RetaError, match=r"method.lr: Value 'fast' of type 'str' could not be converted to Float"):
        spec_for({**base, "lr": "fast"}, 1)
    with pytest.raises(RetaError, match=r"method.head_std: missing"):  # the YAML is the one source of defaults
        spec_for({k: v for k, v in base.items() if k != "head_std"}, 1)

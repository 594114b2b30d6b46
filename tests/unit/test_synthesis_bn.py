"""BN-statistics hooks and loss terms (docs/methods.md §3.1): hook statistics equal a direct computation."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from reta.models import build_model, features
from reta.synthesis.bn.matching import BNHooks, BNMatchingLoss, CrossEntropyLoss, TeacherSlot


def tiny_teacher(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model({"name": "convnet_tiny", "kwargs": {}}, 10, 1, 28)
    for m in model.modules():  # non-trivial running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def direct_stats(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = a.transpose(0, 1).reshape(a.shape[1], -1).double()
    return flat.mean(1), flat.var(1, unbiased=False)


def test_hook_statistics_equal_direct_batch_statistics():
    model = tiny_teacher()
    hooks = BNHooks(model, first_multiplier=10.0)
    x = torch.randn(6, 1, 28, 28)
    with hooks.capture():
        model(x)
    f = model.features  # [conv, bn, relu, pool] × depth
    inputs = [f[0](x), f[4](f[3](f[2](f[1](f[0](x)))))]
    assert len(hooks) == 2
    expected = 0.0
    for hook, a, mult in zip(hooks.hooks, inputs, (10.0, 1.0)):
        mean, var = direct_stats(a)
        torch.testing.assert_close(hook.mean.double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(hook.var.double(), var, rtol=1e-5, atol=1e-6)
        bn = hook.layer
        expected += mult * (torch.norm(bn.running_mean.double() - mean) + torch.norm(bn.running_var.double() - var))
    assert float(hooks.matching_loss().detach()) == pytest.approx(float(expected), rel=1e-5)


def test_hooks_record_only_inside_capture_and_gradients_reach_pixels():
    model = tiny_teacher()
    slot = TeacherSlot("t", model, r_bn=0.5)
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    with slot.hooks.capture():
        logits = model(x)
    before = [h.term.detach().clone() for h in slot.hooks.hooks]
    features(model, torch.randn(4, 1, 28, 28))  # a separate forward (PTA/DRC features): hooks are off
    model(torch.randn(4, 1, 28, 28))
    assert not slot.hooks.enabled
    assert all(torch.equal(b, h.term.detach()) for b, h in zip(before, slot.hooks.hooks))

    class Step:  # the attributes loss terms read
        teacher = slot
        targets = torch.tensor([0, 1, 2, 3])

    Step.logits = logits
    bn = BNMatchingLoss()(Step)
    assert float(bn) == pytest.approx(0.5 * float(slot.hooks.matching_loss()))
    (CrossEntropyLoss(2.0)(Step) + bn).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_capture_raises_if_forward_missing_and_stats_are_float32_under_autocast():
    model = tiny_teacher()
    hooks = BNHooks(model)
    with hooks.capture():
        pass
    with pytest.raises(RuntimeError, match="recorded nothing"):
        hooks.matching_loss()
    with hooks.capture(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(2, 1, 28, 28))
    assert all(h.mean.dtype == torch.float32 and h.term.dtype == torch.float32 for h in hooks.hooks)


def test_teacher_without_bn_contributes_zero_with_one_warning():
    model = build_model({"name": "convnet", "kwargs": {"depth": 2, "width": 4, "norm": "none"}}, 10, 1, 28)
    hooks = BNHooks(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert float(hooks.matching_loss()) == 0.0
        assert float(hooks.matching_loss()) == 0.0
    assert sum("no BatchNorm" in str(w.message) for w in caught) == 1

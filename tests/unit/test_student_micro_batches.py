"""``protocol.micro_batches`` (the papers' gradient accumulation, FADRM ``validate/train_fkd.py`` ``train``): the
batch goes through the student in k slices, each slice's loss / k, one optimiser step per batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reta.errors import RetaError
from reta.training.student import Protocol, StudentModule, kd_loss

KD = dict(name="kd", labels="teacher", optimizer="adamw", lr=1e-2, momentum=0.9, weight_decay=0.01,
          decay_only_weights=True, batch_size=8, epochs=1, schedule="cosine", cosine_eta=2.0, temperature=4.0,
          rrc_scale_min=0.5, crop_pad=0, flip=True, cutmix=True, dsa=False, teacher_mode="eval", eval_every=10,
          soft_labels="online", shuffle_patches=1, ema_decay=0.0, micro_batches=2, lr_source="protocol",
          committee=None)


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3)).double()


def grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("labels", ["teacher", "hard"])
@pytest.mark.parametrize("n", [8, 6])  # a full batch, and a short last batch (one full slice and one of 2)
def test_micro_batches_equal_the_references_accumulated_gradient(labels, n):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.arange(n) % 3
    t = torch.randn(n, 3, generator=g, dtype=torch.float64)
    p = Protocol.from_cfg({**KD, "labels": labels})
    module = StudentModule(bn_net(), p, [0.5], [0.5], 1, seed=0, teacher=nn.Identity() if labels == "teacher" else None)
    module.model.train()
    module._loss(x, y, t).backward()
    ours = grads(module.model)
    # the reference: slices of batch_size / k = 4, each slice's loss / k backpropagated on its own
    ref = bn_net().train()
    for i in range(0, n, 4):
        out = ref(x[i:i + 4])
        part = kd_loss(out, t[i:i + 4], p.temperature) if labels == "teacher" else nn.functional.cross_entropy(
            out, y[i:i + 4])
        (part / 2).backward()
    assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-14) for a, b in zip(ours, grads(ref)))
    # BN saw each slice on its own: the running statistics moved once per slice
    assert int(module.model[1].num_batches_tracked) == 2
    # and that is not the one-forward gradient
    whole = StudentModule(bn_net(), Protocol.from_cfg({**KD, "labels": labels, "micro_batches": 1}), [0.5], [0.5], 1,
                          seed=0, teacher=nn.Identity() if labels == "teacher" else None)
    whole.model.train()
    whole._loss(x, y, t).backward()
    assert not all(torch.allclose(a, b) for a, b in zip(ours, grads(whole.model)))


@pytest.mark.parametrize("bad, why", [(0, "must be an integer >= 1 that divides batch_size=8"), (3, "divides"),
                                      (1.5, "could not be converted to Integer"), (True, "converted")])
def test_micro_batches_must_divide_the_batch(bad, why):
    with pytest.raises(RetaError, match=f"protocol.micro_batches.*{why}"):
        Protocol.from_cfg({**KD, "micro_batches": bad})

"""``schedule: step_dc`` — DC's ``evaluate_synset`` [code: VICO-UoE/DatasetCondensation ``utils.py``]: ``Epoch + 1``
epochs, lr × 0.1 after epoch index ``Epoch // 2 + 1``, the optimiser recreated there (momentum restarts)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from reta.training.common import decay_step, lr_lambda
from reta.training.student import Protocol, StudentModule, student_loader

HARD = dict(name="dc", labels="hard", optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
            decay_only_weights=False, batch_size=16, epochs=5, schedule="step_dc", cosine_eta=1.0, temperature=1.0,
            rrc_scale_min=0.0, crop_pad=0, flip=False, cutmix=False, dsa=False, teacher_mode="eval", eval_every=100,
            soft_labels="online", shuffle_patches=1, ema_decay=0.0, micro_batches=1, lr_source="protocol",
            committee=None)


@pytest.mark.parametrize("epochs, spe, full", [(1001, 1, 502), (301, 3, 152), (5, 2, 4), (2, 4, 2)])
def test_step_dc_decays_after_epoch_index_epoch_half_plus_one(epochs, spe, full):
    total = epochs * spe
    f = lr_lambda("step_dc", total, steps_per_epoch=spe)
    assert decay_step("step_dc", total, spe) == full * spe
    assert [f(t) for t in range(total)] == [1.0] * min(full * spe, total) + [0.1] * max(total - full * spe, 0)
    assert decay_step("step_half", 1000) == 500 and decay_step("cosine", 1000) is None


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).double()


def trained(schedule: str, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    p = Protocol.from_cfg({**HARD, "schedule": schedule})
    loader = student_loader(x, y, p.batch_size, seed=0)
    module = StudentModule(net(), p, [0.0], [1.0], len(loader), seed=0)
    L.Trainer(max_epochs=p.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False).fit(module, loader)
    return module.model


def test_step_dc_student_equals_the_reference_loop_with_a_recreated_optimiser():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(16, 1, 4, 4, generator=g, dtype=torch.float64)  # one full batch per epoch: order-free
    y = torch.arange(16) % 3
    ref = net()

    def sgd(lr):
        return torch.optim.SGD(ref.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)

    opt = sgd(0.05)
    for ep in range(5):  # Epoch = 4: epochs 0..4, decay after epoch index 4 // 2 + 1 = 3
        opt.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        opt.step()
        if ep == 3:
            opt = sgd(0.005)
    ours = trained("step_dc", x, y)
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(ours.parameters(), ref.parameters()))
    # keeping the momentum across the decay (step_half at the same total) is a different student
    kept = trained("step_half", x, y)
    assert not all(torch.allclose(a, b, rtol=1e-6) for a, b in zip(kept.parameters(), ref.parameters()))

"""EDC's flatness regulariser as a loss term of the BN wing (``method.losses``): EMA images and a KL between views.

Source: docs/methods.md §13.1 [code: shaoshitong/EDC `recover/recover.py` ``--flatness``, ``--ema_alpha``;
arXiv 2404.13733 §3]. The term keeps a pixel-space EMA of the working batch, reset at every job start (and when a
stage changes the resolution),

    x_EMA ← β · x_EMA + (1 − β) · sg(x),     β = ``beta`` (EDC: 0.99 on CIFAR/Tiny),

and adds ``weight · KL(softmax(f(A(x_EMA)) / τ) ‖ softmax(f(A(x)) / τ))`` (``batchmean``, τ = ``temperature`` = 4)
through the step's active teacher ``f``, with *one* batch-shared augmentation ``A`` applied to both (they are
augmented together). x_EMA gets no gradient. ``weight = 0`` switches the term off (no forward, a constant 0).

Deviations [recon]: EDC compares the EMA view with the step's own augmented forward and averages the KL over B·C
elements (``reduction='mean'``); reta draws a separate shared view for the pair (one extra forward of x, with its own
generator seeded by (seed, job)) and uses ``batchmean``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reta.synthesis.bn.step import synthesis_augment


class FlatnessLoss:
    """See the module docstring."""

    name = "flatness"

    def __init__(self, weight: float = 0.0, beta: float = 0.99, temperature: float = 4.0) -> None:
        if float(weight) < 0 or not 0 <= float(beta) < 1 or float(temperature) <= 0:
            raise ValueError(f"need weight >= 0, 0 <= beta < 1, temperature > 0; got {weight}, {beta}, {temperature}")
        self.weight, self.beta, self.temperature = float(weight), float(beta), float(temperature)
        self.ema: torch.Tensor | None = None
        self.gen = torch.Generator()
        self.seed, self.spec = 0, None

    def bind(self, module) -> None:
        self.seed, self.spec = int(module.seed), module.augment_spec

    def __call__(self, step) -> torch.Tensor:
        x = step.images
        if self.weight == 0.0:
            return torch.zeros((), device=x.device)
        if step.step == 0 or self.ema is None or self.ema.shape != x.shape:
            self.ema = x.detach().clone()
            self.gen.manual_seed(self.seed * 1_000_003 + step.job + 7919)
        else:
            self.ema = self.beta * self.ema + (1.0 - self.beta) * x.detach()
        b = x.shape[0]
        views = synthesis_augment(torch.cat([x, self.ema]), step.resolution, self.spec, self.gen)
        logits = step.teacher.model(views[:b])
        with torch.no_grad():
            target = step.teacher.model(views[b:])
        t = self.temperature
        kl = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(target / t, 1), reduction="batchmean",
                      log_target=True)
        return self.weight * kl

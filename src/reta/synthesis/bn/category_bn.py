"""EDC's soft category-aware BN matching as a loss term of the BN wing (``method.losses``).

Source: docs/methods.md §13.1 [code: shaoshitong/EDC `recover/utils.py` ``BNFeatureHook``, `recover/recover.py`;
arXiv 2404.13733 §3]. For every BN layer ``l`` of the active teacher, with the synthetic batch's channel mean ``m`` and
biased variance ``v`` over (B, H, W) (the teacher's own BN hooks, :mod:`reta.synthesis.bn.matching`):

    R_l = α (‖μ_l^run − m̃‖₂ + ‖σ²_l^run − ṽ‖₂) + (1 − α) (‖μ̄_l^cls − m̃‖₂ + ‖σ̄²_l^cls − ṽ‖₂)
    term = scale · r_bn(teacher) · Σ_l m_l R_l,    m_1 = first_bn_multiplier, m_{l>1} = 1

* ``μ̄^cls``, ``σ̄²^cls``: the mean, over the batch's labels, of per-class statistics measured once on the real training
  set — for class ``c`` the average over its images of each image's *spatial* channel mean and spatial variance
  (EDC's definition; it omits the between-image spread). α = ½ is EDC's ``category_aware="global"``.
* ``m̃ = m̄ + m − sg(m)`` with the detached EMA ``m̄ ← μ m̄ + (1 − μ) m`` (``momentum`` μ, EDC's
  ``training_momentum``), reset at every job start: the value is the EMA, the gradient the current batch's. Same for
  ``ṽ``. μ = 0 uses ``m`` itself.

With α = 1 and μ = 0 the term is SRe2L's BN matching (:class:`~reta.synthesis.bn.matching.BNMatchingLoss`), computed by
the same code, bit for bit. reta matches BN-layer inputs only (EDC, after G-VBSM, also hooks every convolution's input
and 4×4-patch statistics).
"""

from __future__ import annotations

import logging

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from reta.data.augment import normalize
from reta.errors import RetaError

log = logging.getLogger(__name__)


@torch.no_grad()
def class_bn_statistics(model, dataset, num_classes: int, mean, std, per_class: int | None = None,
                        batch_size: int = 256) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BN layer (module order) ``(means [num_classes, C], vars [num_classes, C])``: for each class the average over
    its first ``per_class`` training images (all if None) of each image's spatial channel mean and biased variance of
    the layer's input, ``model`` in eval mode."""
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    acc: list[list[torch.Tensor]] = [[] for _ in layers]
    handles = [layer.register_forward_hook(lambda mod, inp, out, i=i: acc[i].append(_per_image(inp[0])))
               for i, layer in enumerate(layers)]
    device = next(model.parameters()).device
    targets = torch.as_tensor(dataset.targets)
    out_means: list[list[torch.Tensor]] = [[] for _ in layers]
    out_vars: list[list[torch.Tensor]] = [[] for _ in layers]
    was_training = model.training
    model.eval()
    try:
        for c in range(num_classes):
            idx = torch.nonzero(targets == c).flatten()
            if per_class is not None:
                idx = idx[: int(per_class)]
            if idx.numel() == 0:
                raise RetaError(f"category-aware BN: class {c} has no training images")
            for a in acc:
                a.clear()
            for s in range(0, idx.numel(), batch_size):
                model(normalize(dataset.gather(idx[s : s + batch_size]).to(device), mean, std))
            for i, a in enumerate(acc):
                stats = torch.cat(a)  # [n, 2, C]
                out_means[i].append(stats[:, 0].mean(0))
                out_vars[i].append(stats[:, 1].mean(0))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [(torch.stack(m), torch.stack(v)) for m, v in zip(out_means, out_vars)]


def _per_image(a: torch.Tensor) -> torch.Tensor:
    a = a.float().flatten(2)
    return torch.stack([a.mean(2), a.var(2, unbiased=False)], 1).cpu()


def category_bn_loss(batch_stats, running, class_stats, classes: torch.Tensor, alpha: float,
                     multipliers) -> torch.Tensor:
    """``Σ_l m_l [α(‖μ_run − m‖ + ‖σ²_run − v‖) + (1 − α)(‖μ̄_cls − m‖ + ‖σ̄²_cls − v‖)]`` (module docstring).
    ``batch_stats``/``running``: per layer ``(mean, var)``; ``class_stats``: per layer ``(means, vars)`` by class."""
    total = None
    for (m, v), (rm, rv), (cm, cv), mult in zip(batch_stats, running, class_stats, multipliers):
        g = torch.linalg.vector_norm(rm - m) + torch.linalg.vector_norm(rv - v)
        term = alpha * g
        if alpha != 1.0:
            mu_c, var_c = cm[classes].mean(0), cv[classes].mean(0)
            term = term + (1.0 - alpha) * (torch.linalg.vector_norm(mu_c - m) + torch.linalg.vector_norm(var_c - v))
        total = mult * term if total is None else total + mult * term
    return total if total is not None else torch.zeros(())


class CategoryAwareBNLoss:
    """The ``bn`` term with EDC's soft category-aware targets and statistic EMA (module docstring)."""

    name = "bn"

    def __init__(self, alpha: float = 0.5, momentum: float = 0.8, scale: float = 1.0, per_class: int | None = None):
        if not 0 <= float(alpha) <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not 0 <= float(momentum) < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.alpha, self.momentum, self.scale = float(alpha), float(momentum), float(scale)
        self.per_class = per_class
        self.class_stats: dict[int, list] = {}
        self._ema: dict[int, list] = {}

    @property
    def plain(self) -> bool:
        """α = 1 and no EMA: exactly SRe2L's BN matching."""
        return self.alpha == 1.0 and self.momentum == 0.0

    def bind(self, module) -> None:
        """Measure every teacher's per-class statistics on ``module.train_set`` (skipped when α = 1), on the GPU
        when there is one (the teacher goes back to where it was)."""
        if self.alpha == 1.0:
            return
        if module.train_set is None:
            raise RetaError("category-aware BN matching needs the training set")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        for i, t in enumerate(module.teachers):
            home = next(t.model.parameters()).device
            self.class_stats[i] = class_bn_statistics(t.model.to(device), module.train_set, module.num_classes,
                                                      module.mean, module.std, self.per_class)
            t.model.to(home)
            log.info("category-aware BN: class statistics of teacher %s measured", t.name)

    def _smooth(self, key: int, stats) -> list:
        if self.momentum == 0.0:
            return stats
        mu, prev = self.momentum, self._ema.get(key)
        ema = []
        for i, (m, v) in enumerate(stats):
            m0, v0 = m.detach(), v.detach()
            ema.append((m0, v0) if prev is None else (mu * prev[i][0] + (1 - mu) * m0, mu * prev[i][1] + (1 - mu) * v0))
        self._ema[key] = ema
        return [(em + m - m.detach(), ev + v - v.detach()) for (m, v), (em, ev) in zip(stats, ema)]

    def __call__(self, step) -> torch.Tensor:
        t = step.teacher
        if step.step == 0:
            self._ema.clear()
        device = step.logits.device
        if self.plain:
            return (self.scale * t.r_bn) * t.hooks.matching_loss().to(device)
        hooks = t.hooks.hooks
        if not hooks:
            return t.hooks.matching_loss().to(device)
        stats = self._smooth(step.teacher_index, t.hooks.stats())
        running = [(h.layer.running_mean.float(), h.layer.running_var.float()) for h in hooks]
        cls = self.class_stats.get(step.teacher_index)
        if cls is None:
            cls = [(rm.unsqueeze(0), rv.unsqueeze(0)) for rm, rv in running]  # α = 1: no class part is used
            classes = torch.zeros_like(step.classes)
        else:
            if cls[0][0].device != device:
                cls = self.class_stats[step.teacher_index] = [(cm.to(device), cv.to(device)) for cm, cv in cls]
            classes = step.classes
        loss = category_bn_loss(stats, running, cls, classes, self.alpha, [h.multiplier for h in hooks])
        return (self.scale * t.r_bn) * loss.to(device)

"""The matching losses of the frozen-backbone family: LGM's linear-head gradient cosine and SFM's flow cosine.

LGM [code: GeorgeCazenavette/linear-gradient-matching ``src/distillation/linear_gm.py``; arXiv 2511.16674 Eq. 2–3]:
for a random linear head (W, b) on frozen features z, g = ∇_{W,b} CE(W z + b, y); the loss is
1 − cos(vec g_real, vec g_syn), one cosine over the flattened ``C·d + C`` vector.

SFM (arXiv 2602.05391; the constants are derived here). At W = 0, b = 0 every softmax output is 1/C, so

    ∂L/∂W_c = μ_all / C − π_c μ_c,   ∂L/∂b_c = 1/C − π_c,

and for balanced classes (π_c = 1/C) ∂L/∂W_c = ((C − 1)/C²) · (μ̄_¬c − μ_c), ∂L/∂b = 0, with μ̄_¬c the mean of the
non-target samples. LGM's real gradient at W ≈ 0 is therefore, up to a constant, the *flow* F_c = μ̄_¬c − μ_c from each
class centre to its non-target centre — a constant computed once from the real data. The synthetic flows are formed
the same way from the (balanced) synthetic set's class means. ``global``: 1 − cos(vec F_syn, vec F*) (= LGM at W = 0);
``per_class``: 1 − (1/C) Σ_c cos(F_syn,c, F*_c).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SFM_VARIANTS = ("global", "per_class")


def head_gradients(z: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   create_graph: bool) -> torch.Tensor:
    """vec ∇_{W,b} CE(z Wᵀ + b, y) (mean over the batch) as one ``[C·d + C]`` vector."""
    loss = F.cross_entropy(z @ weight.t() + bias, y)
    gw, gb = torch.autograd.grad(loss, (weight, bias), create_graph=create_graph)
    return torch.cat([gw.flatten(), gb.flatten()])


def lgm_loss(z_real: torch.Tensor, y_real: torch.Tensor, z_syn: torch.Tensor, y_syn: torch.Tensor,
             weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """1 − cos(g_real, g_syn); the real gradient carries no graph, the synthetic one does (double backward)."""
    w, b = weight.detach().requires_grad_(True), bias.detach().requires_grad_(True)
    g_real = head_gradients(z_real.detach(), y_real, w, b, create_graph=False)
    g_syn = head_gradients(z_syn, y_syn, w, b, create_graph=True)
    return 1 - F.cosine_similarity(g_real, g_syn, dim=0)


def class_means(z: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[C, d]`` per-class means; every class must be present."""
    counts = torch.bincount(y, minlength=num_classes).to(z.dtype)
    if bool((counts == 0).any()):
        raise ValueError(f"class(es) {torch.nonzero(counts == 0).flatten().tolist()} have no sample")
    sums = torch.zeros(num_classes, z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, y, z)
    return sums / counts[:, None]


def flows_from_means(means: torch.Tensor) -> torch.Tensor:
    """F_c = mean_{k≠c} μ_k − μ_c for a balanced set (each class weighs the same)."""
    c = means.shape[0]
    return (means.sum(0, keepdim=True) - means) / (c - 1) - means


def flows_from_sums(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """F*_c = μ̄_¬c − μ_c from per-class feature sums ``[C, d]`` and counts ``[C]`` (float64 advised):
    μ̄_¬c = (Σ_all − Σ_c) / (N − N_c) — the mean over non-target *samples*, exact for imbalanced data too."""
    total, n = sums.sum(0, keepdim=True), counts.sum()
    mu = sums / counts[:, None]
    return (total - sums) / (n - counts)[:, None] - mu


def sfm_loss(f_syn: torch.Tensor, f_target: torch.Tensor, variant: str) -> torch.Tensor:
    """1 − cos between synthetic and target flows ``[C, d]`` (``global`` or ``per_class``)."""
    f_target = f_target.to(f_syn.dtype)
    if variant == "global":
        return 1 - F.cosine_similarity(f_syn.flatten(), f_target.flatten(), dim=0)
    if variant == "per_class":
        return 1 - F.cosine_similarity(f_syn, f_target, dim=1).mean()
    raise ValueError(f"unknown SFM variant {variant!r}; valid: {', '.join(SFM_VARIANTS)}")

"""Losses of the distribution-matching family (DM, IDM, IID) as pure functions — no loops, no state.

Every function takes the tensors of ONE class (the per-class sums over classes are the caller's loop) and returns a
scalar. Formulas and provenance: docs/methods.md §6.

``mean_embedding_loss``
    DM / IDM base term [code: VICO-UoE/DatasetCondensation ``main_DM.py``; uitrbn/IDM ``IDM_cifar10.py``]:
    ``‖mean_i e(x_real_i) − mean_j e(s_j)‖²₂`` — a *sum* of squares over the flattened embedding, not a mean.
``channel_covariance`` / ``covariance_matching_loss``
    IID's local covariance L_CM [code: VincenDen/IID ``DM+ours/main_DM_IID.py``]: the last feature map ``F ∈
    R^{N×C×P}`` (P = spatial positions) is centred over the batch per (channel, position), ``Σ = (1/N) Σ_n F̃_n
    F̃_nᵀ`` (biased, summed over positions, not a correlation), and ``L_CM = ‖Σ_real − Σ_syn‖²_F``.
``centralization_loss``
    IID's class centralisation L_CC [same file]: ``Σ_i ‖g_i − ḡ‖²₂`` over the synthetic images of a class, ḡ their
    own (not detached) mean; the paper's form ``Σ_i max(0, exp(α‖g_i − ḡ‖²) − β)`` is an option [recon, §6.3].
``class_aware_ce``
    IDM's regulariser: ``acc · CE(logits, c)`` with ``acc`` the embedder's running training accuracy in percent.

At one synthetic image per class both IID terms are inert (F̃ = 0 ⇒ Σ_syn = 0 with no gradient; one sample equals its
mean ⇒ L_CC = 0): :func:`iid_inert` says when, and the caller warns once (docs/methods.md §6.3, "IPC = 1 inertness").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CC_FORMS = ("linear", "exp")


def mean_embedding_loss(real: torch.Tensor, syn: torch.Tensor) -> torch.Tensor:
    """``‖mean(real) − mean(syn)‖²₂`` over flattened embeddings ``[N_r, …]`` and ``[N_s, …]`` (real side detached)."""
    if real.shape[1:] != syn.shape[1:]:
        raise ValueError(f"embedding shapes differ: real {tuple(real.shape)} vs synthetic {tuple(syn.shape)}")
    diff = real.detach().flatten(1).mean(0) - syn.flatten(1).mean(0)
    return (diff * diff).sum()


def channel_covariance(fmap: torch.Tensor) -> torch.Tensor:
    """``[C, C]`` channel covariance of a feature map ``[N, C, *spatial]`` (or ``[N, C, P]``).

    Centred over the batch per (channel, position); ``Σ[c, c'] = (1/N) Σ_n Σ_p F̃[n, c, p] F̃[n, c', p]``.
    """
    if fmap.ndim < 3:
        raise ValueError(
            f"channel_covariance needs a feature map [N, C, ...] with spatial dims, got {tuple(fmap.shape)}"
        )
    f = fmap.flatten(2)  # [N, C, P]
    f = f - f.mean(0, keepdim=True)
    return torch.einsum("ncp,ndp->cd", f, f) / f.shape[0]


def covariance_matching_loss(real_fmap: torch.Tensor, syn_fmap: torch.Tensor) -> torch.Tensor:
    """``‖Σ(real) − Σ(syn)‖²_F`` with :func:`channel_covariance`; the real side is detached."""
    if real_fmap.shape[1:] != syn_fmap.shape[1:]:
        raise ValueError(f"feature maps differ: real {tuple(real_fmap.shape)} vs synthetic {tuple(syn_fmap.shape)}")
    d = channel_covariance(real_fmap.detach()) - channel_covariance(syn_fmap)
    return (d * d).sum()


def centralization_loss(g: torch.Tensor, form: str = "linear", alpha: float = 0.02, beta: float = 1.0) -> torch.Tensor:
    """Spread of one class's synthetic features ``g`` ``[N, D]`` around their own mean (IID L_CC, unweighted).

    ``linear`` (released code): ``Σ_i ‖g_i − ḡ‖²``. ``exp`` (paper form, reconstructed): ``Σ_i max(0, exp(α‖g_i −
    ḡ‖²) − β)``; β = 1 makes it 0 when all features are equal, as the linear form is. The weight κ is the caller's.
    """
    if form not in CC_FORMS:
        raise ValueError(f"unknown L_CC form {form!r}; valid: {', '.join(CC_FORMS)}")
    g = g.flatten(1)
    d = ((g - g.mean(0, keepdim=True)) ** 2).sum(1)  # [N]
    if form == "linear":
        return d.sum()
    return torch.clamp(torch.exp(alpha * d) - beta, min=0.0).sum()


def class_aware_ce(logits: torch.Tensor, label: int, acc_percent: float) -> torch.Tensor:
    """IDM's ``acc · CE(logits, label)``, ``acc_percent`` ∈ [0, 100] the embedder's running train accuracy."""
    target = torch.full((logits.shape[0],), int(label), dtype=torch.long, device=logits.device)
    return float(acc_percent) * F.cross_entropy(logits, target)


def iid_inert(syn_per_class: int) -> bool:
    """True when L_CM and L_CC cannot move the images: one synthetic training image per class."""
    return int(syn_per_class) < 2


INERT_MESSAGE = (
    "IID terms are inert here: one synthetic image per class (IPC 1 without IDM's x4 expansion) has zero batch "
    "covariance and equals its own mean, so L_CM is a constant and L_CC is 0 — this run equals the base method "
    "(docs/methods.md §6.3); they are skipped."
)

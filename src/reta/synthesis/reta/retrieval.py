"""Dynamic Retrieval Connection (DRC) math: anchor complexity, fit–complexity score, retrieval.

Source: docs/methods.md §4.1 (RETA, arXiv 2602.24144: "selects a real patch from a prebuilt pool by
minimizing a fit-complexity score in teacher feature space"; formula [paper*], discretisation and
reuse policies [recon]).

* Complexity c(o) = Var_u ‖∇(G_σ * luma(o))(u)‖², population variance over all pixels, on images in
  pixel space [0, 1]; luma = 0.299 R + 0.587 G + 0.114 B (one channel used as is); Gaussian blur
  σ = 1 px, kernel size 2⌈3σ⌉ + 1, reflect padding; gradient by central differences
  (u[i+1] − u[i−1]) / 2 or the Sobel operator scaled by 1/8 (both in intensity per pixel), with
  reflect padding of one pixel.
* Per-pool normalisation ĉ = (c − min) / (max − min + 1e-12) (a constant pool gives ĉ ≡ 0), or the
  option c / (median + 1e-12).
* Score J(o | x̃) = (1 − λ)·‖q − z(o)‖² + λ·ĉ(o) with q, z L2-normalised, so ‖q − z‖² = 2 − 2 cos.
* Confidence-aware score (optional, ``mu`` > 0): J'(o) = J(o) + μ·r̂(o) with r̂ ∈ [0, 1] the entry's teacher-CE rank
  in its class list over the list length (0 = the teacher's most confident crop), so a feature neighbour the
  teacher is unsure of must fit much better to be chosen. Own addition, not in the paper.
* Incumbent (optional): the slot's own anchor (its initial patch, FADRM's fixed anchor) is always a candidate and
  is kept unless another entry scores lower by more than ``margin`` (J'(own) − min J' > margin); it wins ties.
  ``margin`` = 0 keeps the paper's argmin except for exact ties; a large margin turns DRC into FADRM's static
  anchor. Own addition, not in the paper.
* Reuse: ``allow`` (independent argmin per query); ``per_connection`` / ``never`` exclude the anchors
  in ``used`` and, greedily in slot (query) order, the anchors chosen by earlier slots of the same
  call. What ``used`` holds is the caller's policy: the anchors chosen by other slots at this
  connection (``per_connection``) or every anchor of the class so far (``never``). When every anchor
  is excluded the slot falls back to ``allow`` with a warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
REUSE_POLICIES = ("allow", "per_connection", "never")
NORMALIZATIONS = ("minmax", "median", "none")
GRADIENTS = ("central", "sobel")
_NORM_EPS = 1e-12


def luma(images: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W] -> [B, 1, H, W]``: 0.299 R + 0.587 G + 0.114 B for C = 3, as is for C = 1."""
    if images.dim() != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    channels = images.shape[1]
    if channels == 1:
        return images
    if channels == 3:
        w = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images * w).sum(1, keepdim=True)
    raise ValueError(f"luma needs 1 or 3 channels, got {channels}")


def gaussian_kernel1d(sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian of std ``sigma`` px with 2⌈3σ⌉ + 1 taps."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    radius = math.ceil(3.0 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(x**2) / (2.0 * sigma * sigma))
    return (k / k.sum()).to(dtype)


def _conv_separable(x: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    """Correlate ``x [B, 1, H, W]`` with ``ky`` along H and ``kx`` along W, reflect padding."""
    ry, rx = (len(ky) - 1) // 2, (len(kx) - 1) // 2
    h, w = x.shape[-2:]
    if ry >= h or rx >= w:
        raise ValueError(f"image {h}x{w} is too small for reflect padding of ({ry}, {rx}) pixels")
    x = F.pad(x, (rx, rx, ry, ry), mode="reflect")
    x = F.conv2d(x, kx.to(x).view(1, 1, 1, -1))
    return F.conv2d(x, ky.to(x).view(1, 1, -1, 1))


def gaussian_blur(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, 1, H, W]`` (kernel 2⌈3σ⌉ + 1, reflect padding)."""
    k = gaussian_kernel1d(sigma, x.dtype).to(x.device)
    return _conv_separable(x, k, k)


def image_gradients(x: torch.Tensor, method: str = "central") -> tuple[torch.Tensor, torch.Tensor]:
    """(∂/∂x, ∂/∂y) of ``[B, 1, H, W]`` in intensity per pixel, reflect padding of one pixel.

    ``central``: (u[i+1] − u[i−1]) / 2; ``sobel``: Sobel operator / 8 (smoothing [1, 2, 1]/4 across).
    """
    diff = torch.tensor([-0.5, 0.0, 0.5], dtype=x.dtype, device=x.device)
    if method == "central":
        ident = torch.tensor([0.0, 1.0, 0.0], dtype=x.dtype, device=x.device)
    elif method == "sobel":
        ident = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=x.device)
    else:
        raise ValueError(f"unknown gradient method {method!r}; expected one of {GRADIENTS}")
    return _conv_separable(x, diff, ident), _conv_separable(x, ident, diff)


def image_complexity(
    images: torch.Tensor, sigma: float = 1.0, gradient: str = "central", check_range: bool = True
) -> torch.Tensor:
    """c(o) ``[B]`` = population variance over pixels of ‖∇(G_σ * luma(o))‖² (docs/methods.md §4.1).

    ``images [B, C, H, W]`` must be in pixel space [0, 1] (clamp after resampling); with
    ``check_range`` values outside [0, 1] raise instead of producing a silently rescaled score.
    """
    if check_range and images.numel() and (float(images.min()) < 0.0 or float(images.max()) > 1.0):
        raise ValueError(
            "image_complexity expects pixel-space images in [0, 1] (denormalise and clamp first)"
        )
    y = gaussian_blur(luma(images), sigma)
    gx, gy = image_gradients(y, gradient)
    energy = (gx * gx + gy * gy).flatten(1)
    return energy.var(dim=1, unbiased=False)


def normalize_complexity(complexity: torch.Tensor, method: str = "minmax") -> torch.Tensor:
    """Per-pool normalisation of c: ``minmax`` (c − min)/(max − min + 1e-12), ``median`` c/(median + 1e-12)."""
    if complexity.dim() != 1 or complexity.numel() == 0:
        raise ValueError(f"complexity must be a non-empty [P] vector, got shape {tuple(complexity.shape)}")
    if method == "minmax":
        lo, hi = complexity.min(), complexity.max()
        return (complexity - lo) / (hi - lo + _NORM_EPS)
    if method == "median":
        # quantile(0.5) averages the two middle values (numpy's median); torch.median takes the lower one
        return complexity / (torch.quantile(complexity, 0.5) + _NORM_EPS)
    if method == "none":
        return complexity
    raise ValueError(f"unknown normalisation {method!r}; expected one of {NORMALIZATIONS}")


def fit_complexity_scores(
    query_feats: torch.Tensor, pool_feats: torch.Tensor, pool_complexity_norm: torch.Tensor, lam: float
) -> torch.Tensor:
    """J ``[Q, P]`` = (1 − λ)·‖q − z‖² + λ·ĉ with q, z L2-normalised (‖q − z‖² = 2 − 2 cos, clamped ≥ 0)."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    if query_feats.dim() != 2 or pool_feats.dim() != 2 or query_feats.shape[1] != pool_feats.shape[1]:
        raise ValueError(
            f"need [Q, D] and [P, D] features, got {tuple(query_feats.shape)} and {tuple(pool_feats.shape)}"
        )
    if pool_complexity_norm.shape != pool_feats.shape[:1]:
        raise ValueError(
            f"pool complexity must be [P] = {pool_feats.shape[0]}, got {tuple(pool_complexity_norm.shape)}"
        )
    q = F.normalize(query_feats, dim=1)
    z = F.normalize(pool_feats.to(q), dim=1)
    fit = (2.0 - 2.0 * q @ z.T).clamp_min(0.0)
    return (1.0 - lam) * fit + lam * pool_complexity_norm.to(q)[None, :]


@dataclass(frozen=True)
class RetrievalResult:
    """Chosen pool index and its score J per query; ``fell_back[i]`` if slot i ignored exclusions."""

    indices: torch.Tensor  # int64 [Q]
    scores: torch.Tensor  # [Q]
    fell_back: torch.Tensor  # bool [Q]


def confidence_cost(ranks: torch.Tensor, list_size: int) -> torch.Tensor:
    """r̂ = rank / (list_size − 1) ∈ [0, 1] for pool entries at teacher-CE ranks ``ranks`` of a class list of
    ``list_size`` (0 = most confident); a one-entry list costs 0."""
    if list_size < 1 or (ranks.numel() and (int(ranks.min()) < 0 or int(ranks.max()) >= list_size)):
        raise ValueError(f"ranks must lie in [0, {list_size}), got {ranks.tolist()}")
    return ranks.double().div(max(list_size - 1, 1)).float()


def keep_incumbent(scores: torch.Tensor, chosen: torch.Tensor, incumbent: Sequence[int | None],
                   margin: float, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """``chosen`` with slot i replaced by ``incumbent[i]`` where J(incumbent) − J(chosen) ≤ ``margin`` (the own
    anchor wins ties); ``None`` or excluded incumbents leave the slot as chosen."""
    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    if len(incumbent) != scores.shape[0]:
        raise ValueError(f"need one incumbent per query ({scores.shape[0]}), got {len(incumbent)}")
    out = chosen.clone()
    for i, own in enumerate(incumbent):
        if own is None or (excluded is not None and bool(excluded[int(own)])):
            continue
        if float(scores[i, int(own)] - scores[i, int(chosen[i])]) <= margin:
            out[i] = int(own)
    return out


def retrieve(
    query_feats: torch.Tensor,
    pool_feats: torch.Tensor,
    pool_complexity: torch.Tensor,
    lam: float,
    reuse: str = "allow",
    used: Iterable[int] | None = None,
    normalization: str = "minmax",
    incumbent: Sequence[int | None] | None = None,
    margin: float = 0.0,
    pool_confidence: torch.Tensor | None = None,
    mu: float = 0.0,
) -> RetrievalResult:
    """o* = argmin_o J(o | x̃) for every query (slot) of one class at one residual connection.

    ``pool_complexity`` is the raw c of the class pool, normalised here with ``normalization``
    (``none`` if it is already ĉ). For ``per_connection``/``never`` the anchors in ``used`` are
    excluded and slots choose greedily in order, each excluding the earlier slots' choices; an
    exhausted pool makes that slot fall back to ``allow`` with ``warnings.warn``. ``used`` is not
    modified; add ``result.indices`` to it yourself. With ``allow``, ``used`` has no effect.
    ``pool_confidence`` (r̂ of :func:`confidence_cost`) adds ``mu``·r̂ to J; ``incumbent`` (one pool index or
    ``None`` per query) keeps the slot's own anchor within ``margin`` of the best (:func:`keep_incumbent`).
    """
    if reuse not in REUSE_POLICIES:
        raise ValueError(f"unknown reuse policy {reuse!r}; expected one of {REUSE_POLICIES}")
    scores = fit_complexity_scores(
        query_feats, pool_feats, normalize_complexity(pool_complexity, normalization), lam
    )
    if mu:
        if mu < 0 or pool_confidence is None or pool_confidence.shape != scores.shape[1:]:
            raise ValueError(f"mu must be >= 0 with a [P] = [{scores.shape[1]}] pool_confidence")
        scores = scores + float(mu) * pool_confidence.to(scores)[None, :]
    num_q, num_p = scores.shape
    fell_back = torch.zeros(num_q, dtype=torch.bool, device=scores.device)
    if reuse == "allow":
        idx = scores.argmin(dim=1)
        if incumbent is not None:
            idx = keep_incumbent(scores, idx, incumbent, margin)
        return RetrievalResult(idx, scores.gather(1, idx[:, None]).squeeze(1), fell_back)
    excluded = torch.zeros(num_p, dtype=torch.bool, device=scores.device)
    for i in used or ():
        if not 0 <= int(i) < num_p:
            raise ValueError(f"used anchor {i} is outside the pool of {num_p}")
        excluded[int(i)] = True
    indices = torch.empty(num_q, dtype=torch.long, device=scores.device)
    for slot in range(num_q):
        row = scores[slot]
        if bool(excluded.all()):
            warnings.warn(
                f"DRC reuse={reuse!r}: all {num_p} pool anchors are used; slot {slot} falls back to 'allow'",
                stacklevel=2,
            )
            fell_back[slot] = True
            indices[slot] = row.argmin()
            continue
        indices[slot] = row.masked_fill(excluded, float("inf")).argmin()
        if incumbent is not None:
            indices[slot] = keep_incumbent(row[None], indices[slot : slot + 1], [incumbent[slot]], margin, excluded)[0]
        excluded[indices[slot]] = True
    return RetrievalResult(indices, scores.gather(1, indices[:, None]).squeeze(1), fell_back)

"""Gradient-matching distances of DC/DSA [code: VICO-UoE/DatasetCondensation ``utils.py`` ``match_loss``,
``distance_wb``; paper: Zhao, Mopuri & Bilen, ICLR 2021, arXiv 2006.05929, Eq. 7–8].

``ours`` (the layer-wise distance of the DC code): each pair of gradient tensors is reshaped to rows — a conv weight
``(out, in, h, w)`` to ``(out, in·h·w)``, a 3-d tensor ``(C, h, w)`` to ``(C, h·w)``, a 2-d (linear) weight kept
as is — and contributes ``Σ_rows (1 − ⟨g_r,i, g_s,i⟩ / (‖g_r,i‖·‖g_s,i‖ + 1e-6))``; every 1-d tensor (biases, norm
affine parameters) contributes 0. The distance is the sum over tensors. ``mse``: ``Σ (g_r − g_s)²`` over the
concatenated flat vectors. ``cos``: ``1 − cos(flat g_r, flat g_s)`` with ``+1e-6`` in the denominator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

DISTANCES = ("ours", "mse", "cos")
EPS = 1e-6


def _rows(g: torch.Tensor) -> torch.Tensor | None:
    if g.ndim == 1:
        return None
    if g.ndim == 2:
        return g
    return g.reshape(g.shape[0], -1)


def layerwise_distance(g_real: torch.Tensor, g_syn: torch.Tensor) -> torch.Tensor:
    """``d(g_r, g_s)`` of one parameter tensor (``ours``); 0 for 1-d tensors."""
    r, s = _rows(g_real), _rows(g_syn)
    if r is None:
        return g_syn.new_zeros(())
    cos = (r * s).sum(-1) / (r.norm(dim=-1) * s.norm(dim=-1) + EPS)
    return (1.0 - cos).sum()


def match_distance(g_real: Sequence[torch.Tensor], g_syn: Sequence[torch.Tensor], metric: str = "ours"
                   ) -> torch.Tensor:
    """Distance between two gradient lists (``net.parameters()`` order); see the module docstring."""
    if len(g_real) != len(g_syn):
        raise ValueError(f"gradient lists differ in length: {len(g_real)} vs {len(g_syn)}")
    if metric == "ours":
        return torch.stack([layerwise_distance(r, s) for r, s in zip(g_real, g_syn)]).sum()
    fr = torch.cat([r.reshape(-1) for r in g_real])
    fs = torch.cat([s.reshape(-1) for s in g_syn])
    if metric == "mse":
        return ((fr - fs) ** 2).sum()
    if metric == "cos":
        return 1.0 - (fr * fs).sum() / (fr.norm() * fs.norm() + EPS)
    raise ValueError(f"unknown matching distance {metric!r}; valid: {', '.join(DISTANCES)}")

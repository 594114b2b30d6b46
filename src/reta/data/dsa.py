"""Differentiable Siamese Augmentation (DSA).

Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021, arXiv 2102.08259.
Behaviour follows the public reference, VICO-UoE/DatasetCondensation ``utils.py`` (``ParamDiffAug``,
``DiffAugment`` and the ``rand_*`` functions); this is an independent implementation of that behaviour
(docs/methods.md §6.1 for the parameters, §5.2 for the evaluation protocol).

Families (the reference's ``AUGMENT_FNS`` keys) and what each does to a batch ``x`` of shape ``[B, C, H, W]``:

``color``
    brightness, then saturation, then contrast, each with its own draw ``u ~ U[0, 1)``:
    ``x + (u - 0.5) * brightness``; ``(x - m_c) * (u * saturation) + m_c`` with ``m_c`` the per-pixel mean over
    channels; ``(x - m) * (u + contrast) + m`` with ``m`` the per-image mean over ``C, H, W``.
``crop``
    integer translation by ``t ~ U{-s, ..., s}`` pixels per axis, ``s = int(size * crop_pad + 0.5)``; pixels
    shifted in from outside the image are 0 (the reference's zero-padded index grid).
``cutout``
    zero a square of side ``int(size * cutout + 0.5)`` whose centre is drawn uniformly (the reference's range:
    ``{0, ..., size}`` for an even side, ``{0, ..., size - 1}`` for an odd one), clipped at the border.
``flip``
    horizontal flip (last axis) with probability ``flip_p``.
``scale``
    affine sampling grid ``diag(sx, sy)`` with ``sx, sy ~ U[1/scale, scale)`` (independent draws).
``rotate``
    affine sampling grid rotated by ``θ ~ U[-rotate, rotate)`` degrees.

``scale`` and ``rotate`` use ``F.affine_grid`` + ``F.grid_sample`` (bilinear, zero padding,
``align_corners=False`` in both, as the reference gets from the torch defaults). All values are used as given:
inputs are expected in *normalised* space (as in the reference), so they may be negative and "zero" padding
/ cutout means the dataset mean, not black. Every op is built from out-of-place tensor ops on ``x``, so the
output is differentiable w.r.t. ``x`` (gradients do not flow into the random parameters, which are constants).

Single-op mode (``single_op=True``, the reference's ``aug_mode='S'`` used by DC/DSA/DM) draws ONE family per
call, uniformly among the families in ``strategy``, and applies it to the whole batch; ``single_op=False`` (the
reference's ``'M'``) applies every family in ``strategy`` order.

Randomness and the Siamese property
-----------------------------------
The reference reseeds the global torch RNG with ``seed, seed + 1, ...`` before every draw, and when a seed is
given (``batchmode``) it overwrites every per-sample parameter with the first sample's, so one parameter set
is applied to the whole batch; without a seed each sample gets its own parameters. Here all randomness comes
from an explicit ``torch.Generator`` (any device; drawn values are moved to ``x.device``), and the two
reference modes are the ``shared`` flag:

* ``shared=True`` (reference ``batchmode``, what DM/IDM/IID use on the real and synthetic batch of a class):
  one parameter set for the whole batch. Two calls with identically seeded generators apply the identical
  transform to every image, whatever the two batch sizes (real 256 vs synthetic 10). :meth:`DSA.siamese` does
  this for several batches from one integer seed.
* ``shared=False`` (reference unseeded, the §5.2 student-training path): parameters are drawn per sample.
  Identically seeded generators and EQUAL batch sizes give the same family and the same parameters for sample
  ``i``; with different batch sizes the per-sample parameters are not matched (torch does not promise that
  ``rand(n)`` is a prefix of ``rand(m)``) — use ``shared=True`` for that.

A draw is a :class:`DSASample`: the chosen families and raw uniforms in ``[0, 1)``, mapped to concrete
parameters only when applied (so a shared draw does not depend on the image size). ``DSA.draw`` + ``DSA.apply``
split ``__call__`` in two when the same draw must be applied to several tensors explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["DSA_OPS", "DSAParams", "DSASample", "DSA"]

# Family name -> how many U[0, 1) numbers one sample's parameters need (order of draws within a family).
_N_UNIFORMS: dict[str, int] = {
    "color": 3,  # brightness, saturation, contrast
    "crop": 2,  # row shift, column shift
    "cutout": 2,  # centre row, centre column
    "flip": 1,
    "scale": 2,  # sx (width axis of the grid), sy (height axis)
    "rotate": 1,
}

DSA_OPS: tuple[str, ...] = tuple(_N_UNIFORMS)
"""Valid op-family names for :attr:`DSAParams.strategy` (joined with ``_``)."""


@dataclass
class DSAParams:
    """DSA hyperparameters; defaults are the reference's ``ParamDiffAug`` / docs/methods.md §6.1.

    ``strategy``: op families joined by ``_`` (subset of :data:`DSA_OPS`; ``''`` or ``'none'`` = identity).
    ``single_op``: one family drawn per call (reference mode ``'S'``) vs all in order (``'M'``).
    ``flip_p``: flip probability. ``scale``: max scale ratio (``sx, sy ~ U[1/scale, scale)``).
    ``rotate``: max angle in degrees. ``crop_pad``: max translation as a fraction of the side.
    ``cutout``: cutout square side as a fraction of the side. ``brightness``, ``saturation``, ``contrast``:
    the colour ratios (see the module docstring for the formulas).
    """

    strategy: str = "color_crop_cutout_flip_scale_rotate"
    single_op: bool = True
    flip_p: float = 0.5
    scale: float = 1.2
    rotate: float = 15.0
    crop_pad: float = 0.125
    cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5

    def __post_init__(self) -> None:
        ops = self.ops
        unknown = [op for op in ops if op not in _N_UNIFORMS]
        if unknown:
            raise ValueError(
                f"unknown DSA op(s) {unknown} in strategy {self.strategy!r}; valid ops: {', '.join(DSA_OPS)} "
                "(joined with '_'), or 'none'"
            )
        if len(set(ops)) != len(ops):
            raise ValueError(f"DSA strategy {self.strategy!r} repeats an op")
        if not 0.0 <= self.flip_p <= 1.0:
            raise ValueError(f"DSA flip_p must be in [0, 1], got {self.flip_p}")
        if not self.scale > 0.0:
            raise ValueError(f"DSA scale must be > 0, got {self.scale}")
        if not 0.0 <= self.crop_pad < 1.0:
            raise ValueError(f"DSA crop_pad must be in [0, 1), got {self.crop_pad}")
        if not 0.0 <= self.cutout <= 1.0:
            raise ValueError(f"DSA cutout must be in [0, 1], got {self.cutout}")
        for name in ("rotate", "brightness", "saturation", "contrast"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"DSA {name} must be a finite number >= 0, got {value}")

    @property
    def ops(self) -> tuple[str, ...]:
        """The op families of :attr:`strategy`, in order (empty for ``''`` / ``'none'``)."""
        s = str(self.strategy).strip()
        if s.lower() in ("", "none"):
            return ()
        return tuple(s.split("_"))


@dataclass
class DSASample:
    """One draw of DSA randomness: the families to apply (in order) and, per family, raw uniforms.

    ``uniforms[op]`` is float32 ``[n, k]`` in ``[0, 1)`` with ``n = 1`` for a shared draw (broadcast to any
    batch) or ``n = batch size`` for a per-sample draw; ``k`` is the family's number of parameters.
    """

    ops: tuple[str, ...]
    uniforms: dict[str, torch.Tensor]
    shared: bool


class DSA:
    """Differentiable Siamese Augmentation (arXiv 2102.08259; reference ``utils.py`` ``DiffAugment``).

    ``DSA(params)(x, generator, shared=...)`` returns the augmented ``x`` (same shape, dtype and device).
    See the module docstring for the ops and the Siamese semantics of ``shared``.
    """

    def __init__(self, params: DSAParams | None = None, shared: bool = False) -> None:
        self.params = params if params is not None else DSAParams()
        self.shared = bool(shared)

    def __repr__(self) -> str:
        return f"DSA({self.params!r}, shared={self.shared})"

    # ------------------------------------------------------------------ randomness
    def draw(
        self, batch_size: int, generator: torch.Generator | None = None, shared: bool | None = None
    ) -> DSASample:
        """Draw the families and raw parameters for a batch of ``batch_size`` images.

        Draw order from ``generator`` (``None`` = torch's global RNG): in single-op mode one ``randint`` picks
        the family; then, for each applied family in order, ``rand(n, k)`` (``n = 1`` if shared else
        ``batch_size``).
        """
        shared = self.shared if shared is None else bool(shared)
        if batch_size < 1:
            raise ValueError(f"DSA needs a batch of at least one image, got batch_size={batch_size}")
        device = generator.device if generator is not None else torch.device("cpu")
        ops = self.params.ops
        if self.params.single_op and len(ops) > 1:
            k = int(torch.randint(0, len(ops), (1,), generator=generator, device=device).item())
            ops = (ops[k],)
        n = 1 if shared else int(batch_size)
        uniforms = {
            op: torch.rand(n, _N_UNIFORMS[op], generator=generator, device=device, dtype=torch.float32)
            for op in ops
        }
        return DSASample(ops=ops, uniforms=uniforms, shared=shared)

    # ------------------------------------------------------------------ application
    def apply(self, x: torch.Tensor, sample: DSASample) -> torch.Tensor:
        """Apply a drawn :class:`DSASample` to ``x`` ``[B, C, H, W]`` (differentiable w.r.t. ``x``)."""
        if x.ndim != 4:
            raise ValueError(f"DSA expects a [B, C, H, W] batch, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"DSA expects a floating-point batch, got {x.dtype}")
        b = x.shape[0]
        for op in sample.ops:
            u = sample.uniforms[op].to(device=x.device)
            if u.shape[0] != b:
                if u.shape[0] != 1:
                    raise ValueError(
                        f"DSA per-sample draw for {u.shape[0]} images applied to a batch of {b}; "
                        "draw with shared=True to apply one transform to batches of different sizes"
                    )
                u = u.expand(b, -1)
            x = getattr(self, f"_{op}")(x, u)
        return x

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator | None = None, shared: bool | None = None
    ) -> torch.Tensor:
        """Augment ``x`` ``[B, C, H, W]`` with randomness from ``generator`` (see :meth:`draw`)."""
        if x.ndim != 4:
            raise ValueError(f"DSA expects a [B, C, H, W] batch, got shape {tuple(x.shape)}")
        return self.apply(x, self.draw(x.shape[0], generator, shared))

    def siamese(self, *batches: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
        """Apply one shared transform, drawn from ``torch.Generator().manual_seed(seed)``, to every batch.

        The DM/IDM/IID use: ``real_aug, syn_aug = dsa.siamese(real, syn, seed=s)``; batch sizes may differ.
        Equivalent to calling ``self(b, torch.Generator().manual_seed(seed), shared=True)`` on each batch.
        """
        if not batches:
            raise ValueError("DSA.siamese needs at least one batch")
        sample = self.draw(1, torch.Generator().manual_seed(int(seed)), shared=True)
        return tuple(self.apply(b, sample) for b in batches)

    # ------------------------------------------------------------------ the families
    # Each takes x [B, C, H, W] and u [B, k] (float32 uniforms in [0, 1) on x.device) and returns a new tensor.

    def _color(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        p = self.params
        u = u.to(x.dtype).view(-1, 3, 1, 1, 1)
        x = x + (u[:, 0] - 0.5) * p.brightness
        m_c = x.mean(dim=1, keepdim=True)
        x = (x - m_c) * (u[:, 1] * p.saturation) + m_c
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - m) * (u[:, 2] + p.contrast) + m

    def _flip(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        do = (u[:, 0] < self.params.flip_p).view(-1, 1, 1, 1)
        return torch.where(do, x.flip(3), x)

    @staticmethod
    def _randint(u: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Map ``u ~ U[0, 1)`` to integers uniform on ``{lo, ..., hi}`` (long)."""
        k = torch.floor(u.float() * (hi - lo + 1)).long()
        return k.clamp_(max=hi - lo) + lo

    def _crop(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        sh, sw = int(h * self.params.crop_pad + 0.5), int(w * self.params.crop_pad + 0.5)
        if sh == 0 and sw == 0:
            return x
        ty = self._randint(u[:, 0], -sh, sh)  # rows: out[i] = x[i + ty]
        tx = self._randint(u[:, 1], -sw, sw)  # columns
        xp = F.pad(x, (sw, sw, sh, sh))  # zeros outside the image
        rows = (torch.arange(h, device=x.device).view(1, h) + ty.view(b, 1) + sh).view(b, 1, h, 1)
        xp = torch.gather(xp, 2, rows.expand(b, c, h, w + 2 * sw))
        cols = (torch.arange(w, device=x.device).view(1, w) + tx.view(b, 1) + sw).view(b, 1, 1, w)
        return torch.gather(xp, 3, cols.expand(b, c, h, w))

    def _cutout(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ch, cw = int(h * self.params.cutout + 0.5), int(w * self.params.cutout + 0.5)
        if ch == 0 or cw == 0:
            return x
        cy = self._randint(u[:, 0], 0, h - (ch % 2))  # centre row, reference range
        cx = self._randint(u[:, 1], 0, w - (cw % 2))
        top = (cy - ch // 2).view(b, 1, 1)
        left = (cx - cw // 2).view(b, 1, 1)
        r = torch.arange(h, device=x.device).view(1, h, 1)
        q = torch.arange(w, device=x.device).view(1, 1, w)
        inside = (r >= top) & (r < top + ch) & (q >= left) & (q < left + cw)  # [B, H, W]
        keep = (~inside).to(x.dtype).unsqueeze(1)
        return x * keep

    @staticmethod
    def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _scale(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r = float(self.params.scale)
        s = u.float() * (r - 1.0 / r) + 1.0 / r  # [B, 2]: sx, sy
        zero = torch.zeros_like(s[:, 0])
        theta = torch.stack([torch.stack([s[:, 0], zero, zero], 1), torch.stack([zero, s[:, 1], zero], 1)], 1)
        return self._affine(x, theta)

    def _rotate(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        a = (u[:, 0].float() - 0.5) * 2.0 * self.params.rotate * math.pi / 180.0
        cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        return self._affine(x, theta)

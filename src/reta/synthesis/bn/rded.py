"""The ``rded`` method: realistic, diverse real patches chosen by the teacher, stitched, with no optimisation.

Source: docs/methods.md §12 [code: LINs-lab/RDED `synthesize/main.py` ``init_images``, `synthesize/utils.py`
``mix_images``; arXiv 2312.03526]. Per class ``c``, with the frozen squeeze teacher ``f`` in eval mode:

1. ``mipc`` real training images, ``num_crop`` square ``RandomResizedCrop(D // factor, scale=crop_scale)`` crops
   each, every crop zero-padded (centred, normalised space) back to ``D`` and scored by
   ``s = −log softmax(f(pad(crop)))_c``;
2. the lowest-``s`` crop per source image, the images ranked by it ascending, the first ``n = IPC·factor²`` kept —
   this is the teacher-scored patch pool of :mod:`reta.synthesis.bn.init` (:func:`~reta.synthesis.bn.init.rank_crops`),
   shared with FADRM's initialisation;
3. output image ``i < IPC`` is a ``factor × factor`` grid whose cell ``k`` (row-major) holds rank ``k·IPC + i``
   (:func:`stitch`). With ``factor = 1`` the set is the IPC lowest-CE crops.

Images are stored in float (``quantize_uint8: true`` truncates to 8-bit levels like the reference's JPEG/uint8 path,
without the JPEG loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from reta.errors import RetaError
from reta.synthesis.bn.init import cached_patch_pool, teacher_id
from reta.synthesis.registry import DistillContext, SynthesisResult
from reta.training.common import eval_device
from reta.utils.config import plain
from reta.utils.schema import parse


@dataclass(frozen=True)
class RDEDConfig:
    """``method.*`` of ``conf/method/rded.yaml`` (see that file for the meaning of every key)."""

    name: str
    synthesize: dict
    scale: str
    requires_teacher: bool  # capabilities: read by the pipeline and the evaluate stage
    eval_protocol: str | None
    smoke: dict  # the debug=smoke shrink (reta.utils.debug)
    factor: int
    mipc: int
    num_crop: int
    crop_scale: list
    quantize_uint8: bool

    @classmethod
    def from_cfg(cls, method, image_size: int) -> RDEDConfig:
        m = parse(cls, method, "method")
        if isinstance(m.factor, bool) or int(m.factor) < 1 or image_size // int(m.factor) < 1:
            raise RetaError(f"method.factor must be an integer >= 1 and <= the image size {image_size}, got {m.factor}")
        if int(m.mipc) <= 0 or int(m.num_crop) <= 0:
            raise RetaError(f"method.mipc ({m.mipc}) and method.num_crop ({m.num_crop}) must be positive")
        lo, hi = (float(v) for v in m.crop_scale) if len(m.crop_scale) == 2 else (0.0, 0.0)
        if not 0 < lo <= hi <= 1:
            raise RetaError(f"method.crop_scale must be [lo, hi] with 0 < lo <= hi <= 1, got {list(m.crop_scale)}")
        return m


def stitch(crops: torch.Tensor, ipc: int, factor: int, size: int) -> torch.Tensor:
    """``crops`` ``[IPC·factor², C, d, d]`` in rank order → ``[IPC, C, size, size]``: image ``i``'s cell ``k``
    (row-major) is ``crops[k·IPC + i]``, resized (nearest) to ``size // factor``; a grid smaller than ``size`` (size
    not divisible by factor) is resized (nearest) to ``size`` [code: LINs-lab/RDED `synthesize/utils.py`]."""
    n = ipc * factor * factor
    if crops.shape[0] != n:
        raise RetaError(f"stitch: need ipc·factor² = {n} crops, got {crops.shape[0]}")
    cell = size // factor
    if crops.shape[-1] != cell:
        crops = F.interpolate(crops, size=(cell, cell), mode="nearest")
    grid = crops.view(factor, factor, ipc, *crops.shape[1:])  # [row, col, i, C, cell, cell]
    out = grid.permute(2, 3, 0, 4, 1, 5).reshape(ipc, crops.shape[1], factor * cell, factor * cell)
    return out if factor * cell == size else F.interpolate(out, size=(size, size), mode="nearest")


def synthesize(cfg, ctx: DistillContext) -> SynthesisResult:
    ds = plain(cfg.dataset)
    size, ipc = int(ds["image_size"]), int(cfg.ipc)
    m = RDEDConfig.from_cfg(cfg.method, size)
    factor = int(m.factor)
    teacher, meta = ctx.load_teacher(None)
    teacher = teacher.eval().requires_grad_(False).to(eval_device(plain(cfg.trainer)))
    pool = cached_patch_pool(
        cfg.paths.cache_dir, ds["name"] + (f"-{ctx.train.tag}" if getattr(ctx.train, "tag", None) else ""),
        teacher_id(meta), dataset=ctx.train, teacher=teacher, mean=ds["mean"], std=ds["std"],
        num_classes=ds["num_classes"], size=size // factor, mipc=int(m.mipc), num_crop=int(m.num_crop),
        seed=int(cfg.seed), crop_scale=tuple(m.crop_scale), pad_to=size if factor > 1 else None,
    )
    need = ipc * factor * factor
    images, sources = [], []
    for c in range(len(pool)):
        if pool.class_size(c) < need:
            raise RetaError(f"rded: class {c} has {pool.class_size(c)} scored images but ipc·factor² = {need} are "
                            "needed (raise method.mipc)")
        images.append(stitch(pool.render(ctx.train, c, range(need)), ipc, factor, size))
        sources.append(pool.source[c][:need].tolist())
    pixels = torch.cat(images).clamp_(0.0, 1.0)
    if m.quantize_uint8:
        pixels = torch.floor(pixels * 255.0) / 255.0
    labels = torch.arange(len(pool)).repeat_interleave(ipc)
    record = {"label": "teacher", **{k: meta.get(k) for k in ("name", "checkpoint_sha256", "test_acc") if k in meta}}
    return SynthesisResult(pixels, labels, {
        "teacher": record, "teachers": [record],
        "synthesis": {"factor": factor, "train_indices": sources,
                      "scores": [pool.scores[c][:need].tolist() for c in range(len(pool))]},
    })


def check_config(cfg) -> None:
    """Validate ``cfg.method`` before any work."""
    RDEDConfig.from_cfg(cfg.method, int(plain(cfg.dataset)["image_size"]))


synthesize.check_config = check_config

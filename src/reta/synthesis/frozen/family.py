"""The frozen-backbone family: Linear Gradient Matching (``method=lgm``, arXiv 2511.16674) and Statistical Flow
Matching (``method=sfm``, arXiv 2602.05391) on a frozen backbone (``backbone`` config group,
:mod:`reta.training.backbone`). The images are made for one backbone: ``meta.json`` records it (name, cache key,
config), and ``protocol=linear_probe`` refuses a set made for another backbone unless asked for a cross-backbone
evaluation. Every method field may be overridden per IPC with ``per_ipc: {IPC: {field: value}}`` (the block of the
run's IPC is merged onto the method config — the rule every family shares, :func:`reta.utils.config.per_ipc_override`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.data import DataLoader

from reta.data.registry import dataset_identity, sample_per_class
from reta.errors import RetaError
from reta.synthesis.checkpoint import PeriodicCheckpoint
from reta.synthesis.frozen.augment import AugSpec
from reta.synthesis.frozen.losses import SFM_VARIANTS, flows_from_sums
from reta.synthesis.frozen.module import FrozenSynthesisModule, load_checkpoint
from reta.synthesis.frozen.pyramid import PixelImages, PyramidImages
from reta.synthesis.frozen.statistics import real_statistics
from reta.synthesis.registry import DistillContext, SynthesisResult
from reta.synthesis.runtime import optimisation_fields, resume_from
from reta.synthesis.stream import StepStream
from reta.training.backbone import get_backbone
from reta.training.common import build_logger, build_trainer, seed_everything
from reta.utils.config import config_digest, per_ipc_override, plain
from reta.utils.schema import parse

LOSSES = ("lgm", "sfm")
PARAMS = ("pyramid", "pixel")
INITS = ("noise", "real")


@dataclass(frozen=True)
class FrozenSpec:
    """``method=lgm`` / ``method=sfm`` (validated at start; unknown keys list the valid ones). Every value comes from
    conf/method/{lgm,sfm}.yaml, the one source of defaults (:mod:`reta.utils.schema`)."""

    name: str
    synthesize: dict  # the plug-in target (reta.synthesis.frozen.family.synthesize)
    scale: str
    requires_teacher: bool  # capabilities: read by the pipeline and the evaluate stage
    eval_protocol: str | None
    loss: str  # sfm | lgm
    variant: str  # SFM only: global | per_class
    param: str  # pyramid | pixel
    init: str  # pixel only: noise | real (the pyramid starts from randn)
    iterations: int
    lr: float
    extent_every: int  # pyramid: steps between level additions
    augs_per_batch: int  # LGM only
    head_std: float  # LGM only
    aug: AugSpec
    log_every: int
    checkpoint_every: int
    per_ipc: dict
    smoke: dict  # the debug=smoke shrink (reta.utils.debug)

    def __post_init__(self) -> None:
        for key, value, valid in (("loss", self.loss, LOSSES), ("variant", self.variant, SFM_VARIANTS),
                                  ("param", self.param, PARAMS), ("init", self.init, INITS)):
            if value not in valid:
                raise RetaError(f"method {self.name}: {key}={value!r} unknown; valid: {', '.join(valid)}")
        if not (self.iterations > 0 and math.isfinite(self.lr) and self.lr > 0 and self.augs_per_batch > 0):
            raise RetaError(f"method {self.name}: iterations, lr and augs_per_batch must be finite and > 0 (got "
                            f"{self.iterations}, {self.lr}, {self.augs_per_batch})")


def spec_for(method_cfg, ipc: int) -> FrozenSpec:
    """``cfg.method`` with its per-IPC block merged, keys and types checked (one line on a bad key or value)."""
    values, _ = per_ipc_override(dict(plain(method_cfg) or {}), ipc)
    return parse(FrozenSpec, {**values, "per_ipc": {}}, "method")  # the run's block is merged in already


def fingerprint(cfg, spec: FrozenSpec, backbone_key: str) -> str:
    ds = plain(cfg.dataset)
    keep = {"method": optimisation_fields(asdict(spec)), "ipc": int(cfg.ipc), "seed": int(cfg.seed),
            "backbone": backbone_key, "dataset": dataset_identity(ds)}
    return config_digest(keep)


def build_images(spec: FrozenSpec, ds: dict, ipc: int, train, seed: int) -> torch.nn.Module:
    C, c, s = int(ds["num_classes"]), int(ds["channels"]), int(ds["image_size"])
    g = torch.Generator().manual_seed(int(seed))
    if spec.param == "pyramid":
        return PyramidImages(C * ipc, c, s, g)
    if spec.init == "real":
        pixels = train.gather(sample_per_class(train.targets, C, ipc, int(seed)))  # float32 in [0, 1]
    else:
        pixels = (torch.randn(C * ipc, c, s, s, generator=g) * 0.2 + 0.5).clamp(0, 1)
    return PixelImages(pixels, C, ipc, ds["mean"], ds["std"])


def synthesize(cfg, ctx: DistillContext) -> SynthesisResult:
    """Distil ``cfg.ipc`` images per class on the frozen ``cfg.backbone`` with LGM or SFM."""
    ipc = int(cfg.ipc)
    spec = spec_for(cfg.method, ipc)
    ds = plain(cfg.dataset)
    C = int(ds["num_classes"])
    with ctx.teacher_timing():  # the backbone (SimCLR trained on first use) is not synthesis time
        backbone = get_backbone(cfg, ctx.train, ctx.test)
    stats_meta, target = {}, None
    if spec.loss == "sfm":
        start = time.perf_counter()
        with ctx.teacher_timing():
            st = real_statistics(backbone, ctx.train, C)
        target = flows_from_sums(st.sums, st.counts)
        stats_meta = {"from_cache": st.from_cache, "seconds": round(time.perf_counter() - start, 2),
                      "num_images": int(st.counts.sum())}
    seed_everything(int(cfg.seed))
    images = build_images(spec, ds, ipc, ctx.train, int(cfg.seed))
    labels = torch.arange(C).repeat_interleave(ipc)
    module = FrozenSynthesisModule(spec, images, backbone, labels, C, int(cfg.seed), target_flows=target,
                                   train=ctx.train if spec.loss == "lgm" else None)
    module.fingerprint = fingerprint(cfg, spec, backbone.key)
    ckpt = ctx.ckpt_dir / "last.ckpt"
    resumed_from = None
    if resume_from(ckpt, bool(cfg.get("resume", False))) is not None:
        load_checkpoint(ckpt, module, ctx.clock)
        resumed_from = module.step_index
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    steps = DataLoader(StepStream(module.step_index, spec.iterations), batch_size=None)  # one batch = one step
    callbacks = [PeriodicCheckpoint(ckpt, spec.checkpoint_every, spec.iterations, final=True, clock=ctx.clock)]
    out = str(ctx.out_dir)
    trainer = build_trainer(plain(cfg.trainer), 1, build_logger(plain(cfg.logger), out, "distill"),
                            bool(cfg.get("progress_bar", False)), out, callbacks=callbacks)
    if len(steps) > 0:
        trainer.fit(module, steps)
    with torch.no_grad():
        pixels = images.decode().detach().cpu().clamp(0, 1)
    ckpt.unlink(missing_ok=True)  # a finished run leaves no checkpoint (as the DM family)
    meta = {
        "backbone": {k: backbone.meta[k] for k in ("name", "key", "source", "config")},
        "frozen": {"loss": spec.loss, "variant": spec.variant if spec.loss == "sfm" else None, "param": spec.param,
                   "iterations": spec.iterations, "effective_method": asdict(spec)},
        "loss_history": module.history,
        "real_statistics": stats_meta,
        "resumed_from_step": resumed_from,
    }
    return SynthesisResult(images=pixels, labels=labels, meta=meta)


def check_config(cfg) -> None:
    """Validate ``cfg.method`` (keys, types, ranges, per-IPC block) before any work."""
    spec_for(cfg.method, int(cfg.ipc))


synthesize.check_config = check_config
synthesize.resume_config = ("backbone",)  # config sections a resume must share (reta.distill.resume_key)

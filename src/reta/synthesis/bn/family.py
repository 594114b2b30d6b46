"""The ``bn_matching`` method kind: SRe2L, FADRM and FADRM+ (and the base RETA builds on) from one config.

Sources: docs/methods.md §3 (all of it) [code: Jiacheng8/FADRM `recover/recover.py`, `recover/scripts/`;
VILA-Lab/SRe2L `SRe2L/recover/`]. The method config (``conf/method/{sre2l,fadrm,fadrm_plus}.yaml``) is parsed into
:class:`BNMethodConfig` — explicit fields, so a misspelt key fails with one line — and turned into a
:class:`~reta.synthesis.bn.module.SynthesisModule` plus callbacks (residual connection, resume checkpoints, any extra
``method.callbacks`` given as ``{name: {_target_: …, …}}``), run by a Lightning Trainer.

SRe2L = noise init, one stage, no residual; FADRM = patch init, K stages with K − 1 residual merges to the static
patch; FADRM+ = FADRM with several teachers used round robin (one per step, each with its own BN hooks and r_bn).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from reta.errors import RetaError
from reta.synthesis.bn.anchors import build_anchor_provider
from reta.synthesis.bn.checkpoint import SynthesisCheckpoint, load_synthesis_checkpoint
from reta.synthesis.bn.init import NoiseInit, PatchBank, PatchInit, cached_patch_pool, teacher_id
from reta.synthesis.bn.matching import BNMatchingLoss, CrossEntropyLoss, TeacherSlot
from reta.synthesis.bn.module import SynthesisModule
from reta.synthesis.bn.residual import ResidualConnection, check_alpha
from reta.synthesis.bn.schedule import StageSchedule
from reta.synthesis.bn.stage_images import StageImageGrid
from reta.synthesis.bn.step import AugmentSpec
from reta.synthesis.distributed import ShardInfo, check_shardable
from reta.synthesis.registry import DistillContext, SynthesisResult
from reta.synthesis.runtime import optimisation_fields, resume_from
from reta.training.common import build_logger, build_trainer, seed_everything
from reta.training.teacher_cache import teacher_specs
from reta.utils.config import config_digest, per_ipc_override, plain
from reta.utils.device import run_device
from reta.utils.schema import parse

log = logging.getLogger(__name__)
INIT_KINDS = ("noise", "patch", "real")
#: Lightning warnings that are expected here (frozen eval-mode teachers, optimisers made per stage, step stream).
QUIET_WARNINGS = (
    ".*module\\(s\\) in eval mode.*", ".*configure_optimizers.*returned.*None.*", ".*IterableDataset.*__len__.*"
)


@dataclass(frozen=True)
class StagesConfig:
    sizes: list | None  # None: every stage at the dataset's native resolution
    budgets: list


@dataclass(frozen=True)
class AugmentConfig:
    rrc: bool
    rrc_scale: list
    flip: bool
    jitter: int


@dataclass(frozen=True)
class InitConfig:
    kind: str
    band: str
    mipc: int
    num_crop: int
    crop_scale: list


@dataclass(frozen=True)
class ResidualConfig:
    enabled: bool
    alpha: float
    anchors: dict | None


@dataclass(frozen=True)
class BNMethodConfig:
    """``method.*`` of a bn_matching config; see conf/method/fadrm.yaml for the meaning (and the value) of every key:
    the YAML is the one source of defaults (:mod:`reta.utils.schema`)."""

    name: str
    synthesize: dict
    scale: str
    requires_teacher: bool  # capabilities: read by the pipeline and the evaluate stage
    eval_protocol: str | None
    teachers: list | None
    r_bn: Any
    first_bn_multiplier: float
    ce_weight: float
    lr: float
    betas: list
    eps: float
    stages: StagesConfig
    classes_per_batch: int | None
    augment: AugmentConfig
    init: InitConfig
    residual: ResidualConfig
    callbacks: dict
    checkpoint_every: int
    log_every: int
    quantize_uint8: bool
    losses: list | None  # [{_target_: …}, …]; None = CE(ce_weight) + BN matching
    per_ipc: dict
    saturation_limit: float  # divergence guard: stop when a step leaves this fraction of pixels at 0 or 1
    smoke: dict  # the debug=smoke shrink (reta.utils.debug)

    @classmethod
    def from_cfg(cls, method: Any, ipc: int | None = None) -> BNMethodConfig:
        """Parse and validate ``method``; with ``ipc``, its ``per_ipc[ipc]`` block is merged over the top level."""
        values, _ = per_ipc_override(plain(method), ipc)
        m = parse(cls, {**values, "per_ipc": plain(method).get("per_ipc") or {}}, "method")
        if m.init.kind not in INIT_KINDS:
            raise RetaError(f"method.init.kind must be one of {', '.join(INIT_KINDS)}, got {m.init.kind!r}")
        check_alpha(m.residual.alpha)
        if len(m.betas) != 2 or not all(0 <= b < 1 for b in m.betas):
            raise RetaError(f"method.betas must be two numbers in [0, 1), got {m.betas}")
        if len(m.augment.rrc_scale) != 2 or not 0 < m.augment.rrc_scale[0] <= m.augment.rrc_scale[1] <= 1:
            raise RetaError(
                f"method.augment.rrc_scale must be [lo, hi] with 0 < lo <= hi <= 1, got {m.augment.rrc_scale}"
            )
        if int(m.augment.jitter) < 0:
            raise RetaError(f"method.augment.jitter must be >= 0, got {m.augment.jitter}")
        if isinstance(m.checkpoint_every, bool) or not isinstance(m.checkpoint_every, int) or m.checkpoint_every < 0:
            raise RetaError(f"method.checkpoint_every must be an integer >= 0 (0 = never), got {m.checkpoint_every!r}")
        if not 0 < float(m.saturation_limit) <= 1:
            raise RetaError(f"method.saturation_limit must be in (0, 1], got {m.saturation_limit}")
        return m


def check_lr(lr: Any, std: list[float]) -> float:
    """A sane range for the Adam step on the images: ``0 < lr <= max(1/std)``. Adam's step moves every pixel by about
    ``lr`` in normalised units whatever the gradient scale, and the whole [0, 1] pixel range spans ``1/std`` normalised
    units, so a larger lr throws every pixel across the data range in one step (the reference settings use
    0.01-0.25; arXiv 2306.13092 and arXiv 2506.24125 recover scripts)."""
    span = max(1.0 / float(s) for s in std)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < float(lr) <= span:
        raise RetaError(f"method.lr must be a number in (0, {span:.3g}] (one Adam step moves a pixel by about lr in "
                        f"normalised units; the data range spans {span:.3g}), got {lr!r}")
    return float(lr)


def r_bn_for(r_bn: Any, label: str) -> float:
    """``r_bn`` is a number (every teacher) or a map ``{default: w, <teacher label>: w}`` (docs/methods.md §3.1)."""
    value = r_bn.get(label, r_bn.get("default", 0.01)) if isinstance(r_bn, dict) else r_bn
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise RetaError(f"method.r_bn for teacher {label!r} must be a number >= 0, got {value!r}")
    return float(value)


def teacher_record(label: str, meta: dict) -> dict:
    keep = ("name", "model", "checkpoint_sha256", "test_acc", "key", "source", "recipe", "seed")
    return {"label": label, **{k: meta.get(k) for k in keep if k in meta}}


def fingerprint(cfg, method: BNMethodConfig, teachers: list[TeacherSlot]) -> str:
    payload = {
        "method": optimisation_fields(dataclasses.asdict(method)),
        "ipc": int(cfg.ipc), "seed": int(cfg.seed), "dataset": plain(cfg.dataset)["name"],
        "teachers": [teacher_id(t.meta) for t in teachers],
    }
    return config_digest(payload)


@torch.no_grad()
def check_resolutions(teachers: list[TeacherSlot], sizes: list[int], channels: int) -> None:
    """Every teacher must accept every stage resolution (a ConvNet's classifier fixes its input size)."""
    for t in teachers:
        for size in sorted(set(sizes)):
            try:
                t.model(torch.zeros(1, channels, size, size))
            except RuntimeError as err:
                raise RetaError(f"teacher {t.name!r} cannot take the stage resolution {size} px "
                                f"({str(err).splitlines()[0]}); use stage sizes it accepts") from None


def check_trainer(trainer_cfg: dict) -> None:
    """One process, and no fp16 loss scaling: the per-stage optimisers are stepped directly (not through Lightning's
    precision plugin), which is exact for 32-true and bf16-mixed but would skip GradScaler's unscale/skip logic."""
    if int(trainer_cfg.get("devices", 1) or 1) > 1 or int(trainer_cfg.get("num_nodes", 1) or 1) > 1:
        raise RetaError("bn_matching synthesis runs one device per process; use trainer=cpu or trainer=gpu (to shard "
                        "the jobs over ranks start one process per rank with torchrun/srun and "
                        "distributed.enabled=true)")
    if str(trainer_cfg.get("precision", "32-true")) in ("16", "16-mixed"):
        raise RetaError(
            "bn_matching synthesis does not support fp16 loss scaling; use trainer.precision=bf16-mixed or 32-true"
        )


def build_losses(m: BNMethodConfig) -> list:
    """The step's loss terms from ``method.losses`` (Hydra ``_target_`` each; None = CE(ce_weight) + BN matching)."""
    if m.losses is None:
        return [CrossEntropyLoss(m.ce_weight), BNMatchingLoss()]
    terms = []
    for i, spec in enumerate(m.losses):
        if not isinstance(spec, dict) or not spec.get("_target_"):
            raise RetaError(f"method.losses[{i}] must be a mapping with a _target_, got {spec!r}")
        try:
            term = instantiate(spec)
        except Exception as err:  # noqa: BLE001 - hydra wraps import and constructor errors in its own types
            raise RetaError(
                f"method.losses[{i}] ({spec['_target_']}): {str(err.__cause__ or err).splitlines()[0]}"
            ) from None
        if not callable(term) or not getattr(term, "name", None):
            raise RetaError(f"method.losses[{i}]: {spec['_target_']} must be callable(step) with a name")
        terms.append(term)
    names = [t.name for t in terms]
    if len(set(names)) != len(names):
        raise RetaError(f"method.losses: term names must be unique, got {names}")
    return terms


def _pool_name(dataset_name: str, train) -> str:
    """The patch-pool cache name: a held-out view of train (``reta.data.holdout``) gets its own entries."""
    tag = getattr(train, "tag", None)
    return f"{dataset_name}-{tag}" if tag else dataset_name


def build_synthesis(cfg, ctx: DistillContext) -> tuple[SynthesisModule, list, BNMethodConfig]:
    """The module and its callbacks for ``cfg`` (no training yet)."""
    m = BNMethodConfig.from_cfg(cfg.method, int(cfg.ipc))
    check_trainer(plain(cfg.trainer))
    shard = ctx.shard or ShardInfo()
    ds = plain(cfg.dataset)
    sizes = m.stages.sizes if m.stages.sizes is not None else [int(ds["image_size"])] * len(m.stages.budgets or [])
    schedule = StageSchedule(sizes, m.stages.budgets, check_lr(m.lr, ds["std"]))
    provider = build_anchor_provider(m.residual.anchors) if m.residual.enabled else None
    ipc = int(cfg.ipc)
    teachers = []
    for label, model_cfg in teacher_specs(cfg, m.teachers):
        model, meta = ctx.load_teacher(model_cfg)
        teachers.append(TeacherSlot(label, model, r_bn_for(m.r_bn, label), float(m.first_bn_multiplier), meta))
    check_resolutions(teachers, schedule.sizes, ds["channels"])
    if cfg.get("channels_last", False):  # NHWC weights; the step's input is converted by the first convolution
        for t in teachers:
            t.model.to(memory_format=torch.channels_last)
    bank = pool = None
    if m.init.kind == "patch" or (provider is not None and provider.needs_pool):
        first = teachers[0]
        device = run_device(plain(cfg.trainer))
        pool = cached_patch_pool(
            cfg.paths.cache_dir, _pool_name(ds["name"], ctx.train), teacher_id(first.meta), dataset=ctx.train,
            teacher=first.model.to(device),
            mean=ds["mean"], std=ds["std"], num_classes=ds["num_classes"], size=ds["image_size"], mipc=int(m.init.mipc),
            num_crop=int(m.init.num_crop), seed=int(cfg.seed), crop_scale=tuple(m.init.crop_scale),
        )
        first.model.cpu()
        bank = PatchBank(pool, ctx.train, ipc, m.init.band)
    init = PatchInit(bank) if m.init.kind == "patch" else NoiseInit()
    if m.init.kind == "real":  # EDC: a random real image per (class, slot)
        from reta.synthesis.bn.real_init import RealInit

        init = RealInit(ctx.train, ds["num_classes"], ipc, int(cfg.seed))
    module = SynthesisModule(
        teachers, schedule, ds["num_classes"], ipc, ds["image_size"], ds["channels"], ds["mean"], ds["std"], init,
        AugmentSpec(bool(m.augment.rrc), tuple(m.augment.rrc_scale), bool(m.augment.flip), int(m.augment.jitter)),
        build_losses(m), betas=tuple(m.betas), eps=m.eps,
        classes_per_batch=m.classes_per_batch, seed=int(cfg.seed), patch_bank=bank, patch_pool=pool,
        train_set=ctx.train, fingerprint=fingerprint(cfg, m, teachers), log_every=m.log_every,
        shard=(shard.rank, shard.world), saturation_limit=float(m.saturation_limit),
    )
    for term in module.losses:  # terms that need the teachers or the training set (EDC's class statistics)
        if hasattr(term, "bind"):
            term.bind(module)
    if cfg.paths.get("cache_dir"):  # where callbacks and anchor providers cache teacher features of the real pool
        module.feature_pool_cache = Path(cfg.paths.cache_dir) / "feature_pools"
    callbacks: list = []
    media = (plain(cfg.logger) or {}).get("stage_images")
    if media is not None and media.get("enabled", True):  # first, so it sees the stage's pixels before the merge
        callbacks.append(StageImageGrid(media.get("slots", [0]), int(media.get("nrow", 10))))
    if provider is not None and schedule.num_stages > 1:
        callbacks.append(ResidualConnection(m.residual.alpha, provider))
    for name, spec in (m.callbacks or {}).items():
        try:
            callbacks.append(instantiate(spec))
        except Exception as err:  # noqa: BLE001 - hydra wraps constructor errors in its own types
            raise RetaError(f"method.callbacks.{name}: cannot instantiate ({str(err).splitlines()[0]})") from err
    every = int(m.checkpoint_every)  # 0 = never
    callbacks.append(SynthesisCheckpoint(Path(ctx.ckpt_dir) / "last.ckpt", every, ctx.clock))
    return module, callbacks, m


def synthesize(cfg, ctx: DistillContext) -> SynthesisResult:
    shard = ctx.shard or ShardInfo()
    with shard.main_first("loading the teachers and the patch pool"):  # rank 0 fills the shared caches first
        module, callbacks, m = build_synthesis(cfg, ctx)
    check_shardable(module, callbacks, shard)
    ckpt = Path(ctx.ckpt_dir) / "last.ckpt"
    if resume_from(ckpt, bool(cfg.get("resume", False))) is not None:
        load_synthesis_checkpoint(ckpt, module, callbacks, ctx.clock)
    else:
        seed_everything(int(cfg.seed))
    logger = build_logger(plain(cfg.logger), str(ctx.out_dir), "distill") if shard.is_main else False
    trainer = build_trainer(plain(cfg.trainer), 1, logger, bool(cfg.get("progress_bar", False)), str(ctx.out_dir),
                            callbacks=callbacks, **shard.trainer_overrides(plain(cfg.trainer)))
    with shard.together("synthesising its jobs"):  # a rank that fails makes every rank fail (none waits in the gather)
        if module.next_step < module.total_steps:
            with warnings.catch_warnings():
                for msg in QUIET_WARNINGS:
                    warnings.filterwarnings("ignore", message=msg)
                trainer.fit(module)
    shard.gather_images(module)  # sharded: rank 0's store now holds every job
    pixels = module.images.pixels()
    if m.quantize_uint8:  # the reference's 8-bit PNG output, truncating ×255 (docs/methods.md §3.8 "Output")
        pixels = torch.floor(pixels * 255.0) / 255.0
    records = [teacher_record(t.name, t.meta) for t in module.teachers]
    residual = next((cb for cb in callbacks if isinstance(cb, ResidualConnection)), None)
    meta = {
        "teacher": records[0],
        "teachers": records,
        "synthesis": {
            "schedule": module.schedule.describe(),
            "jobs": len(module.jobs),
            "steps": len(module.jobs) * module.schedule.total,
            "round_robin": [t.name for t in module.teachers],
            "r_bn": {t.name: t.r_bn for t in module.teachers},
            "init": {"kind": m.init.kind, **(module.patch_bank.describe() if module.patch_bank is not None else {}),
                     **(module.init.describe() if hasattr(module.init, "describe") else {})},
            "residual": residual.describe() if residual is not None else None,
            "seconds_per_job": [round(s, 3) for s in module.job_seconds],
            "loss_terms": {t.name: t.describe() for t in module.losses if hasattr(t, "describe")},
            "effective_method": {k: v for k, v in dataclasses.asdict(m).items() if k != "per_ipc"},
        },
    }
    return SynthesisResult(pixels, module.images.labels, meta)


def check_config(cfg) -> None:
    """Validate ``cfg.method`` (keys, types, ranges, per-IPC block, the lr range of :func:`check_lr`) and the trainer
    before any work."""
    m = BNMethodConfig.from_cfg(cfg.method, int(cfg.ipc))
    build_losses(m)
    teacher_specs(cfg, m.teachers)  # teacher names are options of the `model` group
    check_lr(m.lr, plain(cfg.dataset)["std"])
    check_trainer(plain(cfg.trainer))


synthesize.shardable = True  # jobs are independent given (seed, job): reta.synthesis.distributed
synthesize.check_config = check_config

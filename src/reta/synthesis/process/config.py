"""Validated configuration of the process-matching family: :class:`GradientSpec` (DC, DSA) and
:class:`TrajectorySpec` (MTT). ``cfg.method`` → a frozen dataclass through the one schema parser
(:func:`reta.utils.schema.parse`): every value comes from ``conf/method/dc.yaml`` / ``mtt.yaml`` (the one source of
defaults); unknown keys, wrong types, missing keys and out-of-range values fail with one line naming the key or the
valid choices, before any work. A ``per_ipc`` block (the published loops and learning rates differ per IPC) is merged
by the rule every family shares (:func:`reta.utils.config.per_ipc_override`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reta.data.dsa import DSAParams
from reta.errors import RetaError
from reta.synthesis.process.distance import DISTANCES
from reta.training.experts import ExpertRecipe
from reta.utils.config import per_ipc_override, plain
from reta.utils.schema import parse

INITS = ("real", "noise")


def _check_common(spec: Any) -> None:
    if spec.init not in INITS:
        raise RetaError(f"method.init {spec.init!r}; valid: {', '.join(INITS)}")
    every = spec.checkpoint_every
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise RetaError(f"method.checkpoint_every must be an integer >= 0 (0 = never), got {every!r}")
    if spec.iterations < 1:
        raise RetaError(f"method.iterations must be >= 1, got {spec.iterations}")
    if spec.lr_img <= 0:
        raise RetaError(f"method.lr_img must be > 0, got {spec.lr_img}")
    try:
        DSAParams(**dict(spec.dsa))
    except (TypeError, ValueError) as err:
        raise RetaError(f"method.dsa: {err}") from None
    if (spec.net.get("kwargs") or {}).get("norm") == "batch":
        raise RetaError("method.net: BatchNorm networks need the reference's BN freezing (not implemented); "
                        "use norm: instance or none")


def _resolve(cls: type, method_cfg: Any, ipc: int) -> Any:
    d = per_ipc_override(dict(plain(method_cfg) or {}), ipc)[0]
    spec = parse(cls, d, "method")
    spec.validate()
    return spec


@dataclass(frozen=True)
class GradientSpec:
    """DC / DSA (``method=dc`` / ``method=dsa``) [code: VICO-UoE/DatasetCondensation ``main.py``, flag names in
    brackets]."""

    name: str
    synthesize: dict  # the plug-in target (reta.synthesis.process.family.synthesize)
    scale: str  # label only
    requires_teacher: bool  # capabilities: read by the pipeline and the evaluate stage
    eval_protocol: str | None  # the protocol these sets are meant for; reta-evaluate warns on a mismatch
    iterations: int  # [Iteration]
    outer_loop: int  # image steps per iteration, each on a progressively trained network [get_loops]
    inner_loop: int  # epochs of network training on the synthetic set between image steps [get_loops]
    lr_img: float  # [lr_img], SGD on the images (normalised space)
    momentum: float  # image optimiser momentum (created once, never reset)
    lr_net: float  # [lr_net], inner-loop SGD without momentum
    batch_real: int  # real images per class per matching [batch_real]
    batch_train: int  # inner-loop batch on the synthetic set [batch_train]
    init: str  # noise | real [init]
    net: dict  # the network re-initialised every iteration [model]
    siamese: bool  # DSA: one shared augmentation per class for real and synthetic (DSA's matching)
    inner_dsa: bool  # DSA: per-image augmentation in the inner loop
    dsa: dict  # DSAParams fields; {} = color_crop_cutout_flip_scale_rotate, one op
    distance: str  # ours | mse | cos [dis_metric]
    clamp_output: bool  # false: the set keeps the optimised pixels unclamped (meta clamped: false), as DC evaluates
    log_every: int
    checkpoint_every: int  # 0 = never
    smoke: dict  # the debug=smoke shrink (reta.utils.debug)

    @classmethod
    def from_cfg(cls, method_cfg: Any, ipc: int) -> GradientSpec:
        return _resolve(cls, method_cfg, ipc)

    def validate(self) -> None:
        _check_common(self)
        if self.distance not in DISTANCES:
            raise RetaError(f"method.distance {self.distance!r}; valid: {', '.join(DISTANCES)}")
        for name in ("outer_loop", "inner_loop", "batch_real", "batch_train"):
            if int(getattr(self, name)) < 1:
                raise RetaError(f"method.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr_net <= 0:
            raise RetaError(f"method.lr_net must be > 0, got {self.lr_net}")


@dataclass(frozen=True)
class TrajectorySpec:
    """MTT (``method=mtt``) [code: GeorgeCazenavette/mtt-distillation ``distill.py``, flag names in brackets]; the
    expert buffer is ``experts`` (:class:`reta.training.experts.ExpertRecipe`)."""

    name: str
    synthesize: dict
    scale: str
    requires_teacher: bool
    eval_protocol: str | None
    iterations: int  # [Iteration]
    syn_steps: int  # differentiable student steps per iteration [syn_steps]
    expert_epochs: int  # target = the expert this many epochs after the start [expert_epochs]
    max_start_epoch: int  # start epoch drawn from [0, max_start_epoch) [max_start_epoch]
    batch_syn: int  # synthetic minibatch per student step; 0 = the whole set [batch_syn]
    lr_img: float  # [lr_img]
    lr_lr: float  # SGD on the learnable synthetic lr [lr_lr]
    lr_teacher: float  # initial synthetic lr α₀ [lr_teacher]
    momentum: float  # image and lr optimisers
    init: str  # real | noise [pix_init]
    dsa: dict  # per-image DSA in the unroll (DSAParams fields); strategy none = off
    experts: ExpertRecipe  # the expert buffer's recipe (reta.training.experts)
    net: dict  # the student = the experts' architecture
    clamp_output: bool  # false: the set keeps the optimised pixels unclamped (meta clamped: false), as MTT evaluates
    log_every: int
    checkpoint_every: int
    smoke: dict  # the debug=smoke shrink (reta.utils.debug)

    @classmethod
    def from_cfg(cls, method_cfg: Any, ipc: int) -> TrajectorySpec:
        return _resolve(cls, method_cfg, ipc)

    def validate(self) -> None:
        _check_common(self)
        for name in ("syn_steps", "expert_epochs", "max_start_epoch"):
            if int(getattr(self, name)) < 1:
                raise RetaError(f"method.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_syn < 0:
            raise RetaError(f"method.batch_syn must be >= 0 (0 = the whole set), got {self.batch_syn}")
        if self.lr_teacher <= 0 or self.lr_lr < 0:
            raise RetaError("method: lr_teacher must be > 0 and lr_lr >= 0")
        self.experts.validate()
        epochs = self.experts.epochs
        need = self.max_start_epoch - 1 + self.expert_epochs
        if epochs < need:
            raise RetaError(f"method.experts.epochs={epochs} is too short: the start epoch goes up to max_start_epoch "
                            f"- 1 = {self.max_start_epoch - 1} and the target {self.expert_epochs} epochs later "
                            f"(>= {need} needed)")

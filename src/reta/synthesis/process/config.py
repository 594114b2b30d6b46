"""Validated configuration of the process-matching family: :class:`GradientSpec` (DC, DSA) and
:class:`TrajectorySpec` (MTT). ``cfg.method`` → a frozen dataclass; unknown keys, wrong types and out-of-range values
fail with one line naming the key or the valid choices, before any work. A ``per_ipc`` block (the published loops and
learning rates differ per IPC) is merged by the rule every family shares (:func:`reta.utils.config.per_ipc_override`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reta.data.dsa import DSAParams
from reta.errors import RetaError
from reta.synthesis.process.distance import DISTANCES
from reta.utils.config import dataclass_from, per_ipc_override, plain

INITS = ("real", "noise")


def _dc_convnet() -> dict:
    return {"name": "convnet",
            "kwargs": {"depth": 3, "width": 128, "norm": "instance", "pool": "avg", "first_padding": "dc"}}


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
    spec = dataclass_from(cls, d, "method")
    spec.validate()
    return spec


@dataclass(frozen=True)
class GradientSpec:
    """DC / DSA (``method=dc`` / ``method=dsa``) [code: VICO-UoE/DatasetCondensation ``main.py``, flag names in
    brackets]."""

    name: str
    synthesize: dict = field(default_factory=dict)  # the plug-in target (reta.synthesis.process.family.synthesize)
    scale: str = "paper"  # label only
    eval_protocol: str = "dc"  # the protocol these sets are meant for; reta-evaluate warns on a mismatch
    iterations: int = 1000  # [Iteration]
    outer_loop: int = 1  # image steps per iteration, each on a progressively trained network [get_loops]
    inner_loop: int = 1  # epochs of network training on the synthetic set between image steps [get_loops]
    lr_img: float = 0.1  # [lr_img], SGD on the images (normalised space)
    momentum: float = 0.5  # image optimiser momentum (created once, never reset)
    lr_net: float = 0.01  # [lr_net], inner-loop SGD without momentum
    batch_real: int = 256  # real images per class per matching [batch_real]
    batch_train: int = 256  # inner-loop batch on the synthetic set [batch_train]
    init: str = "noise"  # noise | real [init]
    net: dict = field(default_factory=_dc_convnet)  # the network re-initialised every iteration [model]
    siamese: bool = False  # DSA: one shared augmentation per class for real and synthetic (DSA's matching)
    inner_dsa: bool = False  # DSA: per-image augmentation in the inner loop
    dsa: dict = field(default_factory=dict)  # DSAParams fields; {} = color_crop_cutout_flip_scale_rotate, one op
    distance: str = "ours"  # ours | mse | cos [dis_metric]
    log_every: int = 50
    checkpoint_every: int = 50  # 0 = never

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
    expert buffer is ``experts`` (:class:`reta.synthesis.process.experts.ExpertRecipe` fields)."""

    name: str
    synthesize: dict = field(default_factory=dict)
    scale: str = "paper"
    eval_protocol: str = "dc"
    iterations: int = 5000  # [Iteration]
    syn_steps: int = 50  # differentiable student steps per iteration [syn_steps]
    expert_epochs: int = 2  # target = the expert this many epochs after the start [expert_epochs]
    max_start_epoch: int = 2  # start epoch drawn from [0, max_start_epoch) [max_start_epoch]
    batch_syn: int = 0  # synthetic minibatch per student step; 0 = the whole set [batch_syn]
    lr_img: float = 100.0  # [lr_img]
    lr_lr: float = 1e-7  # SGD on the learnable synthetic lr [lr_lr]
    lr_teacher: float = 0.01  # initial synthetic lr α₀ [lr_teacher]
    momentum: float = 0.5  # image and lr optimisers
    init: str = "real"  # real | noise [pix_init]
    dsa: dict = field(default_factory=dict)  # per-image DSA in the unroll (DSAParams fields); strategy none = off
    experts: dict = field(default_factory=dict)  # the expert buffer's recipe (ExpertRecipe fields)
    net: dict = field(default_factory=_dc_convnet)  # the student = the experts' architecture
    log_every: int = 50
    checkpoint_every: int = 50

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
        epochs = self.experts.get("epochs")
        need = self.max_start_epoch - 1 + self.expert_epochs
        if isinstance(epochs, int) and epochs < need:
            raise RetaError(f"method.experts.epochs={epochs} is too short: the start epoch goes up to max_start_epoch "
                            f"- 1 = {self.max_start_epoch - 1} and the target {self.expert_epochs} epochs later "
                            f"(>= {need} needed)")

"""Validated configuration of the ``distribution`` method kind (DM / IDM / IID; docs/methods.md §6).

``cfg.method`` → :class:`DistributionSpec` (with :class:`QueueSpec` for IDM's model queue and :class:`IIDSpec` for the
IID terms); unknown keys, wrong types and out-of-range values fail with one line naming the key or the valid choices.
A ``per_ipc`` block (published settings differ per IPC) is merged by the rule every family shares
(:func:`reta.utils.config.per_ipc_override`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reta.data.dsa import DSAParams
from reta.data.expansion import EXPANSIONS
from reta.errors import RetaError
from reta.synthesis.dm.losses import CC_FORMS
from reta.synthesis.dm.pretrained_pool import PoolSpec
from reta.utils.config import per_ipc_override, plain
from reta.utils.schema import parse

VARIANTS = ("dm", "idm")
INITS = ("real", "noise")


@dataclass(frozen=True)
class QueueSpec:
    """IDM's model queue (``uitrbn/IDM`` flag names in brackets)."""

    initial: int  # nets at start
    capacity: int  # [net_num]
    push_every: int  # [net_generate_interval]
    nets_per_iteration: int  # embedders used per iteration [train_net_num]
    train_nets: int  # queue nets trained after the image update [fetch_net_num]
    train_steps: int  # [model_train_steps]
    batch: int  # [trained_bs]
    lr: float  # [lr_net]
    momentum: float  # [net_decay]: momentum 0.9, wd 5e-4
    weight_decay: float
    acc_window: int  # running-accuracy meters reset every this many iterations [eval_interval]


@dataclass(frozen=True)
class IIDSpec:
    """IID add-on: ``λ_CM · L_CM + κ · L_CC`` (0 disables a term)."""

    lambda_cm: float
    kappa: float
    cc_form: str  # linear (released code) | exp (paper form, reconstructed)
    cc_alpha: float
    cc_beta: float
    pool: PoolSpec


@dataclass(frozen=True)
class DistributionSpec:
    """``cfg.method`` of the ``distribution`` kind, validated (a misspelt key fails); every value comes from
    conf/method/dm.yaml (and the files over it), the one source of defaults (:mod:`reta.utils.schema`)."""

    name: str
    synthesize: dict  # the plug-in target (reta.synthesis.dm.family.synthesize)
    scale: str  # label only
    requires_teacher: bool  # capabilities: read by the pipeline and the evaluate stage
    eval_protocol: str | None  # the protocol these sets are meant for; reta-evaluate warns on a mismatch
    variant: str
    iterations: int
    lr: float
    momentum: float
    batch_real: int
    init: str
    expansion: str
    embedder: dict
    dsa: dict  # DSAParams fields; {} = the DSA defaults of docs/methods.md §6.1
    ce_weight: float  # IDM class-aware CE (idm only)
    queue: QueueSpec
    iid: IIDSpec
    clamp_output: bool  # false: the set keeps the optimised pixels unclamped (meta clamped: false), as DM evaluates
    log_every: int
    checkpoint_every: int  # 0 = never
    smoke: dict  # the debug=smoke shrink (reta.utils.debug)

    @classmethod
    def from_cfg(cls, method_cfg: Any, ipc: int) -> DistributionSpec:
        d = resolve_by_ipc(method_cfg, ipc)
        if isinstance(d.get("iid"), dict) and isinstance(d["iid"].get("pool"), dict):
            d["iid"] = {**d["iid"], "pool": PoolSpec.expand_names(d["iid"]["pool"])}
        spec = parse(cls, d, "method")
        spec.validate()
        return spec

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise RetaError(f"method.variant {self.variant!r}; valid: {', '.join(VARIANTS)}")
        if self.init not in INITS:
            raise RetaError(f"method.init {self.init!r}; valid: {', '.join(INITS)}")
        if self.expansion not in EXPANSIONS:
            raise RetaError(f"method.expansion {self.expansion!r}; valid: {', '.join(EXPANSIONS)}")
        self.iid.pool.validate()
        if self.iid.cc_form not in CC_FORMS:
            raise RetaError(f"method.iid.cc_form {self.iid.cc_form!r}; valid: {', '.join(CC_FORMS)}")
        for name in ("iterations", "batch_real"):
            if int(getattr(self, name)) < 1:
                raise RetaError(f"method.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise RetaError(f"method.lr must be > 0, got {self.lr}")
        if (
            isinstance(self.checkpoint_every, bool) or not isinstance(self.checkpoint_every, int)
            or self.checkpoint_every < 0
        ):
            raise RetaError(
                f"method.checkpoint_every must be an integer >= 0 (0 = never), got {self.checkpoint_every!r}"
            )
        if min(self.iid.lambda_cm, self.iid.kappa, self.ce_weight) < 0:
            raise RetaError("method: lambda_cm, kappa and ce_weight must be >= 0")
        if self.ce_weight > 0 and self.variant != "idm":
            raise RetaError("method.ce_weight > 0 needs variant=idm (the CE weight is the queue net's accuracy)")
        q = self.queue
        if self.variant == "idm" and (q.initial < 1 or q.capacity < max(q.initial, 1) or q.push_every < 1
                                      or q.nets_per_iteration < 1 or q.train_steps < 0 or q.batch < 1):
            raise RetaError(f"method.queue: inconsistent settings {q}")
        DSAParams(**dict(self.dsa))  # fails on unknown DSA keys / values
        if (self.embedder.get("kwargs") or {}).get("norm") == "batch":
            raise RetaError("method.embedder: a BatchNorm embedder would see per-class batch statistics here (DM's "
                            "BN branch forwards all classes at once, not implemented); use norm: instance or none")


def resolve_by_ipc(method_cfg: Any, ipc: int) -> dict:
    """Plain method dict with its ``per_ipc`` block for this IPC merged in (:func:`reta.utils.config.per_ipc_override`,
    the rule every family shares)."""
    return per_ipc_override(dict(plain(method_cfg) or {}), ipc)[0]

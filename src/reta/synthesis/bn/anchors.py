"""The anchor-selection extension point of the residual connection: which real image a synthetic image is merged
with at the end of a stage.

Source: docs/methods.md §3.3 (``anchor(x, i)`` in the stage loop) — the fixed patch P of the image in FADRM
[code: Jiacheng8/FADRM `recover/recover.py`], a per-stage retrieval from the class pool in RETA's DRC (§4.1).

An :class:`AnchorProvider` is built from config (``method.residual.anchors: {_target_: <class>, ...kwargs}``) with an
explicit constructor, bound to the running :class:`~reta.synthesis.bn.module.SynthesisModule` once by
:meth:`AnchorProvider.setup`, and asked for anchors by :class:`reta.synthesis.bn.residual.ResidualConnection` at
every stage end but the last. What a provider may read from the module: ``module.patch_bank`` (FADRM's fixed
patches), ``module.patch_pool`` + ``module.train_set`` (the ranked class pools, rendered with
``pool.render(train_set, c)``), ``module.teachers`` and ``module.teacher_features(x)`` (features with BN hooks
off), ``module.mean``/``module.std``. A provider whose choice depends on the past (e.g. reuse policies)
keeps that in :meth:`state_dict` so a resumed run continues identically.

A new provider is a subclass named by its dotted path in ``_target_`` (Hydra instantiates it; its constructor's
explicit keyword arguments are the config keys); a provider whose anchors depend on other jobs states that in
:meth:`AnchorProvider.sharding_conflict`. The BN family imports no provider outside this module (RETA's DRC is named
in ``conf/method/reta.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate

from reta.data.augment import normalize
from reta.errors import RetaError


@dataclass(frozen=True)
class StageEnd:
    """What a stage-end event carries: the job (slot, classes), the stage that ended and the next resolution.

    ``images`` is the job's current working batch (normalised space, detached view of the parameter),
    ``classes`` LongTensor ``[B]`` and ``slot`` its IPC slot; ``next_size`` is ``None`` after the last stage.
    """

    job: int
    slot: int
    classes: torch.Tensor
    stage: int
    size: int
    next_size: int | None
    images: torch.Tensor

    @property
    def last_stage(self) -> bool:
        return self.next_size is None


class AnchorProvider:
    """Base class: return normalised-space anchors ``[B, C, h, w]`` (any resolution; the residual callback
    resamples) for the images of a stage-end event."""

    #: whether the provider needs the real-patch pool/bank (the synthesis then builds it even with noise init)
    needs_pool: bool = True

    def setup(self, module) -> None:
        """Bind to the synthesis module before the first step (read pools, teachers, normalisation)."""
        self.module = module

    def anchors(self, event: StageEnd) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sharding_conflict(self, module) -> str | None:
        """Why this provider's anchors for a job would depend on jobs other ranks run (None = independent)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"kind": getattr(self, "kind", type(self).__name__)}


def build_anchor_provider(spec: dict | None) -> AnchorProvider:
    """``{_target_: dotted.Class, **kwargs}`` → provider instance (``None`` = the static FADRM anchor); a bad target
    or a misspelt key → one-line :class:`RetaError`."""
    spec = dict(spec or {"_target_": f"{__name__}.StaticPatchAnchors"})
    target = spec.get("_target_")
    if not target:
        raise RetaError("method.residual.anchors._target_ must name an AnchorProvider class "
                        "(e.g. reta.synthesis.bn.anchors.StaticPatchAnchors)")
    try:
        provider = instantiate(spec)
    except Exception as err:  # noqa: BLE001 - hydra wraps import and constructor errors in its own types
        msg = str(err.__cause__ or err).splitlines()[0]
        raise RetaError(
            f"method.residual.anchors ({target}): {msg}; keys {sorted(k for k in spec if k != '_target_')}"
        ) from None
    if not isinstance(provider, AnchorProvider):
        raise RetaError(f"method.residual.anchors: {target} is not an AnchorProvider")
    return provider


class StaticPatchAnchors(AnchorProvider):
    """FADRM: the image's own fixed real patch P (the one it was initialised from, or — with noise init — the
    patch its (class, slot) would have been initialised from)."""

    kind = "static"

    def anchors(self, event: StageEnd) -> torch.Tensor:
        bank = self.module.patch_bank
        if bank is None:
            raise RetaError("residual with static anchors needs the real-patch bank (init.kind=patch or a pool)")
        patches = bank.get(event.classes.cpu(), event.slot).to(event.images.device)
        return normalize(patches, self.module.mean, self.module.std)

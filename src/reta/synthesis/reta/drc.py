"""RETA's Dynamic Retrieval Connection (DRC) as an anchor provider of the residual connection, and its feature pool.

Source: docs/methods.md §4.1 [paper*: RETA, arXiv 2602.24144 — "selects a real patch from a prebuilt pool by minimizing
a fit-complexity score in teacher feature space"; pool, features, reuse and discretisation recon]. The math (complexity,
score, argmin with reuse exclusions) is :mod:`reta.synthesis.reta.retrieval`; this module binds it to a running
synthesis.

**Pool** (:class:`reta.synthesis.reta.pool.FeaturePool`), per class ``c``: the ranked teacher-scored crops of the
real-patch initialisation
(:class:`reta.synthesis.bn.init.PatchPool`, one lowest-CE 1×1 crop per sampled real image, ``mipc`` = 300 by default —
the same cached list FADRM draws its fixed patches from), optionally thinned to ``pool_size`` evenly spaced ranks.
Per entry, computed once per class on first use and kept in memory: ``z`` = L2-normalised penultimate features
(:func:`reta.models.features`, through :meth:`SynthesisModule.teacher_features`, i.e. eval mode with the BN hooks
off) of the reference teacher (``feature_teacher``, default the first one) at the native resolution ``D``, and the raw
complexity ``c`` of the crop resampled to every merge resolution ``D_t``. Pixels are rendered on demand, so the pool
scales to ImageNet (features only: 300 × d floats per class). One pool per (module, teacher, pool_size) is shared by
the DRC provider and the PTA callback (:func:`shared_feature_pool`).

**Retrieval** (:class:`RetrievalAnchors`, the anchor provider ``_target_: reta.synthesis.reta.drc.RetrievalAnchors``),
at every residual connection
(the end of every stage but the last), for every synthetic image x̃ of class c in the batch::

    q = Norm φ(Resample(x̃, D)),  J(o) = (1 − λ)·‖q − z(o)‖² + λ·ĉ(o),  o* = argmin_{o ∈ p_c} J

with ĉ the class-pool-normalised complexity at the merge resolution (``normalization``: minmax | median | none).
The residual callback then merges ``α·x̃ + (1 − α)·o*``.

**Safety options** (own additions, off by default = the paper's argmin; see
:func:`reta.synthesis.reta.retrieval.retrieve`): ``confidence_weight`` μ adds μ·r̂(o) to J, r̂ the entry's teacher-CE
rank over the class list length, so low-confidence neighbours of a prototype that synthesis has moved need a much
better fit to be chosen; ``keep_margin`` δ (null = off) makes the slot's own initial patch (FADRM's fixed anchor) a
candidate that is kept unless another entry scores lower by more than δ — it wins ties, and a large δ is FADRM. Reuse
policies (docs/methods.md §4.1 [recon]):

* ``allow`` — independent argmin per image;
* ``per_connection`` — an anchor chosen by another slot of class c at the same connection is excluded (greedy in
  slot order: slots run in order, so earlier slots choose first);
* ``never`` — every anchor class c has used so far is excluded: all initial anchors of the class (each slot's
  fixed patch claims its anchor at init) and every earlier retrieval of any slot.

An exhausted pool falls back to ``allow`` for that image with a warning. ``enabled: false`` turns the provider into
the static FADRM anchor (the image's own fixed patch), so a RETA config can switch DRC off without changing kind.

**Record**: every choice (class, slot, connection, pool rank, source index in the training set, score J, fit term,
ĉ, fallback) is logged (``drc/*`` means per connection to the run's logger, one INFO line per connection, DEBUG per
image) and kept in :meth:`RetrievalAnchors.describe`, which the BN-matching family writes to ``meta.json`` under
``synthesis.residual.anchors`` as per-class ``[slot][connection]`` lists. The record is part of the resume state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from reta.data.augment import normalize
from reta.errors import RetaError
from reta.synthesis.bn.anchors import AnchorProvider, StageEnd, StaticPatchAnchors
from reta.synthesis.reta.pool import FeaturePool, shared_feature_pool
from reta.synthesis.reta.retrieval import (
    GRADIENTS,
    NORMALIZATIONS,
    REUSE_POLICIES,
    confidence_cost,
    normalize_complexity,
    retrieve,
)
from reta.synthesis.runtime import resample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnchorChoice:
    """One DRC retrieval: pool entry ``index`` (= rank ``rank`` of the class's ranked list, training image
    ``source``) for slot ``slot`` of class ``cls`` at connection ``connection`` (the stage that just ended)."""

    cls: int
    slot: int
    connection: int
    index: int
    rank: int
    source: int
    score: float
    fit: float
    complexity: float
    fell_back: bool
    initial: bool  # the anchor is the slot's own initial patch (what FADRM would have used)

    def row(self) -> list:
        return [self.cls, self.slot, self.connection, self.index, self.rank, self.source, self.score, self.fit,
                self.complexity, int(self.fell_back), int(self.initial)]

    @classmethod
    def from_row(cls, row: Sequence) -> AnchorChoice:
        c, k, i, idx, rank, src, score, fit, cx, fb, ini = row
        return cls(int(c), int(k), int(i), int(idx), int(rank), int(src), float(score), float(fit), float(cx),
                   bool(fb), bool(ini))


class RetrievalAnchors(AnchorProvider):
    """DRC: per-image argmin of the fit–complexity score over the class pool (see module docstring)."""

    needs_pool = True
    module = None  # bound by setup()

    kind = "retrieval"

    def __init__(
        self,
        enabled: bool = True,
        lam: float = 0.1,
        reuse: str = "allow",
        pool_size: int | None = None,
        sigma: float = 1.0,
        gradient: str = "central",
        normalization: str = "minmax",
        feature_teacher: int = 0,
        batch_size: int = 256,
        keep_margin: float | None = None,
        confidence_weight: float = 0.0,
    ) -> None:
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= float(lam) <= 1.0:
            raise RetaError(f"residual.anchors.lam must be a number in [0, 1], got {lam!r}")
        if reuse not in REUSE_POLICIES:
            raise RetaError(f"residual.anchors.reuse must be one of {', '.join(REUSE_POLICIES)}, got {reuse!r}")
        if normalization not in NORMALIZATIONS:
            raise RetaError(f"residual.anchors.normalization must be one of {', '.join(NORMALIZATIONS)}, got "
                            f"{normalization!r}")
        if gradient not in GRADIENTS:
            raise RetaError(f"residual.anchors.gradient must be one of {', '.join(GRADIENTS)}, got {gradient!r}")
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise RetaError(f"residual.anchors.sigma must be a positive number, got {sigma!r}")
        if pool_size is not None and (isinstance(pool_size, bool) or int(pool_size) < 1):
            raise RetaError(f"residual.anchors.pool_size must be a positive integer or null, got {pool_size!r}")
        if keep_margin is not None and (isinstance(keep_margin, bool) or not isinstance(keep_margin, (int, float))
                                        or not math.isfinite(keep_margin) or keep_margin < 0):
            raise RetaError(f"residual.anchors.keep_margin must be null or a number >= 0, got {keep_margin!r}")
        if (isinstance(confidence_weight, bool) or not isinstance(confidence_weight, (int, float))
                or not math.isfinite(confidence_weight) or confidence_weight < 0):
            raise RetaError(f"residual.anchors.confidence_weight must be a number >= 0, got {confidence_weight!r}")
        self.keep_margin = None if keep_margin is None else float(keep_margin)
        self.confidence_weight = float(confidence_weight)
        self.enabled = bool(enabled)
        self.lam, self.reuse, self.pool_size = float(lam), reuse, pool_size
        self.sigma, self.gradient, self.normalization = float(sigma), gradient, normalization
        self.feature_teacher, self.batch_size = int(feature_teacher), int(batch_size)
        self.needs_pool = True
        self._choices: dict[tuple[int, int, int], AnchorChoice] = {}  # (class, slot, connection) → choice, in order
        self._by_class: dict[int, dict[tuple[int, int], AnchorChoice]] = {}  # class → (slot, connection) → choice
        self._static: StaticPatchAnchors | None = None
        self._pool: FeaturePool | None = None

    # ------------------------------------------------------------------------------------------- binding
    def sharding_conflict(self, module) -> str | None:
        """``reuse`` ≠ ``allow`` excludes the anchors earlier slots took, which other ranks synthesise."""
        if self.enabled and self.reuse != "allow":
            return (f"DRC with residual.anchors.reuse={self.reuse} excludes anchors taken by earlier slots, "
                    "which other ranks synthesise; use reuse=allow or run unsharded")
        return None

    def setup(self, module) -> None:
        super().setup(module)
        if not self.enabled:
            self._static = StaticPatchAnchors()
            self._static.setup(module)
            return
        if module.patch_pool is None:
            raise RetaError("DRC (residual.anchors: RetrievalAnchors) needs the real-patch pool; it is built when "
                            "init.kind=patch or the provider asks for it")
        if not 0 <= self.feature_teacher < len(module.teachers):
            raise RetaError(f"residual.anchors.feature_teacher={self.feature_teacher} but the synthesis has "
                            f"{len(module.teachers)} teacher(s)")
        self._pool = None

    @property
    def pool(self) -> FeaturePool:
        if self._pool is None:
            self._pool = shared_feature_pool(self.module, self.feature_teacher, self.pool_size, self.batch_size)
            schedule = getattr(self.module, "schedule", None)
            if schedule is not None:  # complexity at every merge resolution is computed with the features
                self._pool.complexity_specs.update((int(s), self.sigma, self.gradient) for s in schedule.sizes[1:])
        return self._pool

    @property
    def choices(self) -> list[AnchorChoice]:
        """Every retrieval so far, in the order made (one per class, slot and connection)."""
        return list(self._choices.values())

    def _add(self, choice: AnchorChoice) -> None:
        key = (choice.cls, choice.slot, choice.connection)
        self._choices.pop(key, None)  # a resumed run may replay a connection: keep the latest record
        self._choices[key] = choice
        self._by_class.setdefault(choice.cls, {})[choice.slot, choice.connection] = choice

    # ------------------------------------------------------------------------------------------- reuse policy
    def _initial_indices(self, c: int) -> set[int]:
        """Pool indices of class ``c``'s initial anchors (every slot's fixed patch) that lie in the pool."""
        bank = getattr(self.module, "patch_bank", None)
        if bank is None:
            return set()
        where = {int(r): i for i, r in enumerate(self.pool.ranks(c).tolist())}
        return {where[int(r)] for r in bank.ranks[c] if int(r) in where}

    def _initial_index(self, c: int, slot: int) -> int | None:
        bank = getattr(self.module, "patch_bank", None)
        if bank is None or slot >= len(bank.ranks[c]):
            return None
        hit = (self.pool.ranks(c) == int(bank.ranks[c][slot])).nonzero()
        return int(hit[0, 0]) if len(hit) else None

    def excluded(self, c: int, slot: int, connection: int) -> set[int]:
        """Pool indices class ``c``'s slot ``slot`` may not take at ``connection`` under the reuse policy."""
        if self.reuse == "allow":
            return set()
        mine = self._by_class.get(c, {})
        if self.reuse == "per_connection":
            return {ch.index for (k, i), ch in mine.items() if i == connection and k != slot}
        return self._initial_indices(c) | {ch.index for key, ch in mine.items() if key != (slot, connection)}

    # ------------------------------------------------------------------------------------------- retrieval
    @torch.no_grad()
    def anchors(self, event: StageEnd) -> torch.Tensor:
        if not self.enabled:
            return self._static.anchors(event)
        pool, module = self.pool, self.module
        next_size = int(event.next_size if event.next_size is not None else event.size)
        q = module.teacher_features(resample(event.images, pool.size), self.feature_teacher)
        q = F.normalize(q.float().flatten(1), dim=1).cpu()
        crops, made = [], []
        for i, c in enumerate(event.classes.tolist()):
            z, cx = pool.features(c), pool.complexity(c, next_size, self.sigma, self.gradient)
            own = self._initial_index(c, int(event.slot)) if self.keep_margin is not None else None
            conf = (confidence_cost(pool.ranks(c), module.patch_pool.class_size(c)) if self.confidence_weight
                    else None)
            res = retrieve(q[i : i + 1], z, cx, self.lam, self.reuse, self.excluded(c, event.slot, event.stage),
                           self.normalization, incumbent=None if self.keep_margin is None else [own],
                           margin=self.keep_margin or 0.0, pool_confidence=conf, mu=self.confidence_weight)
            j = int(res.indices[0])
            cnorm = float(normalize_complexity(cx, self.normalization)[j])
            fit = float((2.0 - 2.0 * (q[i] @ z[j])).clamp_min(0.0))
            choice = AnchorChoice(c, int(event.slot), int(event.stage), j, int(pool.ranks(c)[j]),
                                  int(pool.sources(c)[j]), float(res.scores[0]), fit, cnorm, bool(res.fell_back[0]),
                                  j == self._initial_index(c, int(event.slot)))
            self._add(choice)
            made.append(choice)
            crops.append(pool.render(c, [j]))
            log.debug("DRC class %d slot %d connection %d: rank %d (train #%d), J=%.4f fit=%.4f c=%.4f", c,
                      choice.slot, choice.connection, choice.rank, choice.source, choice.score, fit, cnorm)
        self._log(made, event)
        anchors = normalize(torch.cat(crops), module.mean, module.std)
        return anchors.to(event.images.device, event.images.dtype)

    def _log(self, made: list[AnchorChoice], event: StageEnd) -> None:
        n = len(made)
        metrics = {
            "drc/score": sum(ch.score for ch in made) / n,
            "drc/fit": sum(ch.fit for ch in made) / n,
            "drc/complexity": sum(ch.complexity for ch in made) / n,
            "drc/initial_anchor_frac": sum(ch.initial for ch in made) / n,
            "drc/fallbacks": float(sum(ch.fell_back for ch in made)),
        }
        log.info("DRC job %d slot %d connection %d: %d anchors, mean J %.4f (fit %.4f, c %.4f), %.0f%% = initial "
                 "patch", event.job, event.slot, event.stage, n, metrics["drc/score"], metrics["drc/fit"],
                 metrics["drc/complexity"], 100 * metrics["drc/initial_anchor_frac"])
        logger = getattr(self.module, "logger", None) if getattr(self.module, "_trainer", None) is not None else None
        if logger is not None:
            logger.log_metrics(metrics, step=int(getattr(self.module, "next_step", 0)))

    # ------------------------------------------------------------------------------------------- state / record
    def state_dict(self) -> dict[str, Any]:
        return {"choices": [ch.row() for ch in self.choices]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._choices, self._by_class = {}, {}
        for row in state.get("choices", []):
            self._add(AnchorChoice.from_row(row))

    def record(self) -> dict[str, Any]:
        """Choices as per-class nested lists ``[class][slot][connection]`` (``null`` where none was made)."""
        choices = self.choices
        if not choices:
            return {}
        num_classes = max(ch.cls for ch in choices) + 1
        slots = max(ch.slot for ch in choices) + 1
        conns = max(ch.connection for ch in choices) + 1
        if self.module is not None:
            num_classes = max(num_classes, int(getattr(self.module, "num_classes", 0)))
            slots = max(slots, int(getattr(self.module, "ipc", 0)))
        table = {key: [[[None] * conns for _ in range(slots)] for _ in range(num_classes)]
                 for key in ("ranks", "sources", "scores", "fit", "complexity")}
        for ch in choices:
            for key, value in (("ranks", ch.rank), ("sources", ch.source), ("scores", round(ch.score, 6)),
                               ("fit", round(ch.fit, 6)), ("complexity", round(ch.complexity, 6))):
                table[key][ch.cls][ch.slot][ch.connection] = value
        n = len(choices)
        return {
            **table,
            "count": n,
            "fallbacks": sum(ch.fell_back for ch in choices),
            "initial_anchor_frac": round(sum(ch.initial for ch in choices) / n, 6),
            "mean_score": round(sum(ch.score for ch in choices) / n, 6),
        }

    def describe(self) -> dict[str, Any]:
        params = {"enabled": self.enabled, "lam": self.lam, "reuse": self.reuse, "pool_size": self.pool_size,
                  "sigma": self.sigma, "gradient": self.gradient, "normalization": self.normalization,
                  "feature_teacher": self.feature_teacher, "keep_margin": self.keep_margin,
                  "confidence_weight": self.confidence_weight}
        if not self.enabled:
            return {"kind": "static", "via": "retrieval(enabled=false)", **params}
        return {"kind": "retrieval", **params, "choices": self.record()}

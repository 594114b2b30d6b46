"""RETA's Persistent Topology Alignment (PTA) as a synthesis callback: adds ``λ_topo · L_topo`` to every step.

Source: docs/methods.md §4.2-§4.3 [paper*: RETA, arXiv 2602.24144 — "a mutual k-NN feature graph", "persistence images
of components and loops", a cache "refreshed every T steps"; cache content, size-matched targets, separate forward and
defaults recon]. The loss itself is :class:`reta.topology.TopologyLoss`; this module supplies its point clouds.

Per step (``on_synthesis_step`` of :class:`~reta.synthesis.bn.module.SynthesisModule`), for each class c of the batch
(batches hold one image per class, the image of IPC slot k):

* **synthetic cloud** Z_c (n_s = IPC points): the live, gradient-carrying feature of the in-batch image at row k and
  a detached per-class cache of the class's other slots — finished slots from their final images, pending slots
  from their initial anchors (the fixed real patch of that slot; without a patch bank pending slots are left out);
* features φ = L2-normalised penultimate features (:func:`reta.models.features`) of the reference teacher
  (``feature_teacher``, default the first; the same φ as DRC), from a **separate eval-mode forward of the
  un-augmented batch** at the stage resolution with the BN hooks off (:meth:`SynthesisModule.teacher_features`), so
  the BN-matching statistics of the step are untouched; the gradient of L_topo flows through the frozen teacher to
  the in-batch pixels;
* **real target**, size-matched: M = ``num_subsets`` random subsets of n_s points of the class's pool features (the
  DRC pool, :func:`reta.synthesis.reta.pool.shared_feature_pool`), mean persistence images.

The synthetic cache and the real targets are refreshed every ``refresh_every`` (T) steps and at every stage
boundary, a job start included (the cache is recomputed at the current stage resolution). With ``targets:
refresh`` new real subsets are drawn at every refresh (one generator advanced by every draw); with ``targets: once``
each (class, cloud size) gets its M subsets drawn once per run from its own generator (seeded by the PTA seed, the
class and the size) and reused by every later refresh — the pool features are fixed for the run, so the target is a
fixed estimate of the same quantity, paid for once instead of at every refresh. Own cost lever, not in the paper
(which does not say whether real subsets are redrawn); a resumed run rebuilds the same targets from their seeds.
At IPC 1 the cloud has no edge: PTA switches itself off with **one warning**. H1 is skipped for clouds of fewer
than 4 points (the library does it). A non-finite term stops the run naming ``topo`` (the module's check). ``every``
> 1 applies the term on every ``every``-th step only (a cost lever; no rescaling). The state (refresh position and
the subset generator) is saved in resume checkpoints so a resumed run draws the same subsets.

**Where the live features come from** (``features``): ``separate`` (the description above: an extra eval-mode
forward and backward of the un-augmented batch through the feature teacher on every step) or ``step`` — the step's
own forward is reused: on the steps whose round-robin teacher is the feature teacher, a forward pre-hook on that
teacher's classifier (``get_classifier()``, timm's API) keeps its input — the penultimate features of the step's
augmented batch, with their graph — and L_topo is added on those steps only (every M-th step with M teachers; a
single teacher: every step). No extra forward, and the backward through the teacher is the step's own, so the
term costs the topology loss alone. Own cost lever, not in the paper (the paper does not say which forward PTA
uses); the live point is then the augmented view of the image, the cached points stay un-augmented.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from reta.data.augment import normalize
from reta.errors import RetaError
from reta.synthesis.reta.pool import shared_feature_pool
from reta.synthesis.runtime import resample
from reta.topology.loss import TopologyConfig, TopologyLoss

log = logging.getLogger(__name__)

FEATURE_SOURCES = ("separate", "step")
TARGET_DRAWS = ("refresh", "once")
IPC1_WARNING = "PTA: IPC 1 gives one-point synthetic clouds without edges (no topology to align); PTA is switched off"


class TopologyAlignment(L.Callback):
    """PTA callback (see module docstring). All topology keys are those of :class:`reta.topology.TopologyLoss`."""

    #: the dataclass whose fields are the ``**topology`` keyword arguments (and hold their defaults)
    topology_schema = TopologyConfig

    def __init__(
        self,
        enabled: bool = True,
        lam_topo: float = 0.5,
        refresh_every: int = 50,
        every: int = 1,
        pool_size: int | None = None,
        feature_teacher: int = 0,
        seed: int | None = None,
        name: str = "topo",
        features: str = "step",
        targets: str = "once",
        **topology,
    ) -> None:
        """The callback's own keys above; ``topology`` = the fields of :class:`reta.topology.loss.TopologyConfig`
        (k, grid, sigma, gamma, power, cutoff, kernel, reduction, squared, num_subsets), whose defaults live there."""
        if features not in FEATURE_SOURCES:
            raise RetaError(f"pta.features must be one of {', '.join(FEATURE_SOURCES)}, got {features!r}")
        if targets not in TARGET_DRAWS:
            raise RetaError(f"pta.targets must be one of {', '.join(TARGET_DRAWS)}, got {targets!r}")
        if isinstance(lam_topo, bool) or not isinstance(lam_topo, (int, float)) or not math.isfinite(lam_topo) \
                or lam_topo < 0:
            raise RetaError(f"pta.lam_topo must be a number >= 0, got {lam_topo!r}")
        for key, value in (("refresh_every", refresh_every), ("every", every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RetaError(f"pta.{key} must be a positive integer, got {value!r}")
        if pool_size is not None and (isinstance(pool_size, bool) or int(pool_size) < 2):
            raise RetaError(f"pta.pool_size must be an integer >= 2 or null, got {pool_size!r}")
        valid = [f.name for f in dataclasses.fields(TopologyConfig)]
        unknown = sorted(set(topology) - set(valid))
        if unknown:
            raise RetaError(f"pta: unknown keys {unknown}; topology keys: {valid}")
        try:
            self.topology = TopologyConfig(**topology)  # validate now: a bad value fails at build time, not at step 1
        except (ValueError, TypeError) as err:
            raise RetaError(f"pta: {err}") from None
        self.topo_kwargs = dataclasses.asdict(self.topology)
        self.enabled, self.lam_topo, self.name = bool(enabled), float(lam_topo), str(name)
        self.refresh_every, self.every = int(refresh_every), int(every)
        self.pool_size, self.feature_teacher, self.seed = pool_size, int(feature_teacher), seed
        self.features, self.targets = features, targets
        self._fixed: dict[tuple[int, int], Any] = {}  # targets=once: (class, cloud size) → its RealTarget
        self._pairs: set[tuple[int, int]] = set()  # targets=once: the (class, size) pairs used so far
        self._draws = 0  # targets=refresh: class targets drawn so far
        self._hook = None  # features=step: forward pre-hook on the feature teacher's classifier
        self._captured: torch.Tensor | None = None
        self.active = False
        self.disabled_reason: str | None = None if self.enabled else "enabled=false"
        self.module = None
        self.loss: TopologyLoss | None = None
        self._warned = False
        self._cache: dict[int, torch.Tensor] = {}  # class → detached features of the other members [n − 1, d]
        self._live: dict[int, int] = {}  # class → row of the live image in its cloud
        self._where: tuple[int, int] | None = None  # (job, stage) of the last refresh
        self._last_refresh = -1  # job step of the last refresh
        self._gen_before: torch.Tensor | None = None  # subset-generator state before the last refresh (resume)
        self._gen_now: torch.Tensor | None = None  # subset-generator state at the checkpoint (resume)
        self._replay = False
        self.refreshes = 0
        self.embeddings = 0  # synthetic-cache embeddings (a refresh with unchanged members reuses the last one)
        self._embedded: tuple | None = None  # (slot, resolution, classes) of the cached embedding
        self._sum, self._count = 0.0, 0

    @property
    def state_key(self) -> str:
        return "TopologyAlignment"

    # ------------------------------------------------------------------------------------------- binding
    def sharding_conflict(self, module) -> str | None:
        """PTA's cloud of a class holds the finished images of its earlier IPC slots, which other ranks synthesise."""
        if self.enabled and self.lam_topo > 0 and int(module.ipc) >= 2:
            return ("PTA (method.callbacks.pta) reads the finished images of earlier IPC slots, which other ranks "
                    "synthesise; set method.callbacks.pta.enabled=false or run unsharded")
        return None

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        self.module = pl_module
        self._embedded = None  # a cache embedding belongs to one module's images: never reused across fits
        self.active = self.enabled and self.lam_topo > 0
        if self.enabled and self.lam_topo == 0:
            self.disabled_reason = "lam_topo=0"
        if self.active and int(pl_module.ipc) < 2:
            self.active, self.disabled_reason = False, "ipc=1"
            if not self._warned:
                warnings.warn(IPC1_WARNING, UserWarning, stacklevel=2)
                log.warning(IPC1_WARNING)
                self._warned = True
        if not self.active:
            return
        if pl_module.patch_pool is None:
            raise RetaError("PTA needs the real-patch pool for its real targets (init.kind=patch or DRC anchors)")
        if not 0 <= self.feature_teacher < len(pl_module.teachers):
            raise RetaError(f"pta.feature_teacher={self.feature_teacher} but the synthesis has "
                            f"{len(pl_module.teachers)} teacher(s)")
        if self.features == "step" and self._hook is None:
            slot = pl_module.teachers[self.feature_teacher]
            head = getattr(slot.model, "get_classifier", None)
            if head is None:
                raise RetaError(f"pta.features=step needs a teacher with get_classifier() (timm API); "
                                f"{slot.name} has none: use pta.features=separate")
            self._hook = head().register_forward_pre_hook(self._capture)
        self.pool = shared_feature_pool(pl_module, self.feature_teacher, self.pool_size)
        smallest = min(self.pool.class_size(c) for c in range(pl_module.num_classes))
        if smallest < pl_module.ipc:
            raise RetaError(f"PTA: size-matched real targets need >= ipc={pl_module.ipc} pool entries per class, the "
                            f"smallest class pool has {smallest} (raise init.mipc or pta.pool_size)")
        if self.loss is None:
            seed = int(pl_module.seed) + 7919 if self.seed is None else int(self.seed)
            self.loss = TopologyLoss(self.topology, seed=seed)
            if self._gen_now is not None:  # loaded from a checkpoint before setup
                self.loss.generator.set_state(self._gen_now)

    def _capture(self, head, inputs) -> None:
        """Keep the classifier input of the step's own forward (BN hooks capturing = inside the step's forward)."""
        if self.module.teachers[self.feature_teacher].hooks.enabled:
            self._captured = inputs[0]

    def teardown(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook, self._captured = None, None

    def _live_features(self, step) -> torch.Tensor | None:
        """L2-normalised live features of the step's batch, or ``None`` when PTA skips this step."""
        if self.features == "separate":
            x = self.module.teacher_features(step.images, self.feature_teacher)
        else:
            if int(step.teacher_index) != self.feature_teacher:
                return None
            x, self._captured = self._captured, None
            if x is None or x.shape[0] != len(step.classes):
                raise RuntimeError("PTA features=step: the step's forward through the feature teacher was not seen")
        return F.normalize(x.float().flatten(1), dim=1)

    # ------------------------------------------------------------------------------------------- cache
    @torch.no_grad()
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.module.teacher_features(x, self.feature_teacher).float().flatten(1), dim=1)

    @torch.no_grad()
    def refresh(self, step) -> None:
        """Recompute the synthetic cache of the batch's classes at the stage resolution and redraw real targets.

        The cache's members — the class's finished slots and the initial patches of the later ones — do not change
        during a job (a job optimises one slot), so a refresh of the same slot, classes and resolution (the next
        stage of equal size, or the ``refresh_every`` period) reuses the last embedding instead of recomputing the
        same features; only the real targets follow the refresh schedule."""
        slot, size = int(step.slot), int(step.resolution)
        classes = step.classes.tolist()
        key = (slot, size, tuple(classes))
        if key != self._embedded:
            self._embed_members(step, slot, size, classes)
            self._embedded = key
        self._refresh_targets(classes)
        self.refreshes += 1

    @torch.no_grad()
    def _embed_members(self, step, slot: int, size: int, classes: list[int]) -> None:
        module = self.module
        ipc, bank = int(module.ipc), module.patch_bank
        device = step.images.device
        members: list[tuple[int, torch.Tensor]] = []  # (class, normalised image at native resolution)
        for c in classes:
            live = 0
            for k in range(ipc):
                if k < slot:
                    members.append((c, module.images.data[c * ipc + k]))
                    live += 1
                elif k > slot and bank is not None:
                    members.append((c, normalize(bank.patches[c, k : k + 1], module.mean, module.std)[0]))
            self._live[c] = live
        feats = torch.zeros(0)
        if members:
            batch = torch.stack([img.to(device) for _, img in members])
            feats = torch.cat([self._embed(resample(batch[s : s + 256], size)) for s in range(0, len(batch), 256)])
        owner = torch.tensor([c for c, _ in members], dtype=torch.long, device=feats.device)
        for c in classes:
            self._cache[c] = feats[owner == c].to(device) if members else torch.zeros(0, 1, device=device)
        self.embeddings += 1

    def _refresh_targets(self, classes: list[int]) -> None:
        n = {c: len(self._cache[c]) + 1 for c in classes}
        if self.loss is not None:
            if self.targets == "once":
                self._fixed_targets(n)
            else:
                self._gen_before = self.loss.generator.get_state()
                for size_n in sorted(set(n.values())):
                    if size_n >= 2:
                        group = {c: self.pool.features(c) for c in classes if n[c] == size_n}
                        self.loss.cache_real_targets(group, size_n)
                        self._draws += len(group)

    def _fixed_targets(self, sizes: dict[int, int]) -> None:
        """targets=once: build the (class, size) targets not built yet, each from its own seeded generator."""
        base = int(self.loss.seed)
        for c, size_n in sizes.items():
            if size_n < 2:
                continue
            if (c, size_n) not in self._fixed:
                generator = torch.Generator().manual_seed(((base * 1_000_003 + c) * 1009 + size_n) % 2**63)
                self._fixed[(c, size_n)] = self.loss.build_targets({c: self.pool.features(c)}, size_n, generator)[c]
            self._pairs.add((c, size_n))
            self.loss.set_real_target(c, self._fixed[(c, size_n)])

    @property
    def target_draws(self) -> int:
        """Real targets drawn: (class, size) pairs with targets=once, class draws over all refreshes with refresh."""
        return len(self._pairs) if self.targets == "once" else self._draws

    def _due(self, step) -> bool:
        where = (int(step.job), int(step.stage))
        due = where != self._where or int(step.step) - self._last_refresh >= self.refresh_every
        if self._replay:  # resumed mid-period: rebuild the last refresh's cache with the same subset draws
            self._replay = False
            if not due and (self.targets == "once" or self._gen_before is not None):
                if self.targets == "refresh":
                    self.loss.generator.set_state(self._gen_before)
                draws, embeddings = self._draws, self.embeddings
                self.refresh(step)  # leaves the generator where the interrupted run had it
                self.refreshes, self._draws, self.embeddings = self.refreshes - 1, draws, embeddings
        return due

    # ------------------------------------------------------------------------------------------- step
    def on_synthesis_step(self, trainer: L.Trainer, pl_module, step) -> None:
        if not self.active or int(step.step) % self.every:
            return
        z = self._live_features(step)
        if z is None:
            return
        if self._due(step):
            self.refresh(step)
            self._where, self._last_refresh = (int(step.job), int(step.stage)), int(step.step)
        classes = step.classes.tolist()
        clouds = []
        for i, c in enumerate(classes):
            rest, p = self._cache[c].to(z), self._live[c]
            clouds.append(torch.cat([rest[:p], z[i : i + 1], rest[p:]]) if len(rest) else z[i : i + 1])
        value = self.loss(clouds, classes)
        step.add_loss(self.name, value, self.lam_topo)
        self._sum += float(value.detach())
        self._count += 1

    # ------------------------------------------------------------------------------------------- state / record
    def state_dict(self) -> dict[str, Any]:
        return {
            "where": None if self._where is None else list(self._where),
            "last_refresh": self._last_refresh,
            "gen_before": self._gen_before,
            "gen_now": None if self.loss is None else self.loss.generator.get_state(),
            "refreshes": self.refreshes,
            "embeddings": self.embeddings,
            "draws": self._draws,
            "pairs": sorted(list(p) for p in self._pairs),
            "sum": self._sum,
            "count": self._count,
            "warned": self._warned,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._where = None if state.get("where") is None else tuple(int(v) for v in state["where"])
        self._last_refresh = int(state.get("last_refresh", -1))
        self._gen_before = state.get("gen_before")
        self._gen_now = state.get("gen_now")
        if self.loss is not None and self._gen_now is not None:
            self.loss.generator.set_state(self._gen_now)
        self.refreshes = int(state.get("refreshes", 0))
        self.embeddings = int(state.get("embeddings", 0))
        self._draws = int(state.get("draws", 0))
        self._pairs = {(int(c), int(n)) for c, n in state.get("pairs", [])}
        self._sum, self._count = float(state.get("sum", 0.0)), int(state.get("count", 0))
        self._warned = bool(state.get("warned", False))
        self._replay = self._where is not None

    def describe(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled, "active": self.active, "disabled_reason": self.disabled_reason,
            "lam_topo": self.lam_topo, **self.topo_kwargs, "refresh_every": self.refresh_every, "every": self.every,
            "pool_size": self.pool_size, "feature_teacher": self.feature_teacher, "features": self.features,
            "targets": self.targets, "target_draws": self.target_draws, "refreshes": self.refreshes,
            "embeddings": self.embeddings,
            "mean_loss": self._sum / self._count if self._count else None,
        }

"""SynthesisModule: BN-matching synthesis (SRe2L / FADRM / FADRM+, and RETA on top) as a LightningModule.

Sources: docs/methods.md §3.1-§3.7 [code: Jiacheng8/FADRM `recover/recover.py`, `recover/utils_recover.py`;
VILA-Lab/SRe2L `SRe2L/recover/recover.py`].

**Work.** The distilled set is cut into *jobs*: for every IPC slot ``k`` (outer loop) and every chunk of
``classes_per_batch`` classes (default: all classes, i.e. one image per class per batch, FADRM), one batch of
images is synthesised from scratch through the whole :class:`~reta.synthesis.bn.schedule.StageSchedule`. The Lightning
fit loop runs one optimiser step per batch; batch ``g`` is global step ``g`` = job ``g // T``, job step ``g % T``.
With ``shard=(rank, world)`` the stream covers only ``own_jobs = jobs[rank::world]`` (:mod:`reta.synthesis.distributed`
merges the shards); every job reseeds the generator from ``(seed, job.index)``, so its images do not depend on
which jobs ran before it.

**Parameters.** ``self.x`` (``nn.Parameter``) is the working batch of the current job in normalised space at the
current stage resolution; ``self.images`` (:class:`~reta.synthesis.pixels.SyntheticImages`) stores every finished
image at the native resolution. Teachers are frozen eval-mode submodules (``train()`` keeps them in eval).

**Step** (job step ``t``): at a stage start a fresh ``Adam(betas=(0.5, 0.9))``; lr from the global cosine;
batch-shared RandomResizedCrop + flip and a roll jitter in ``[0, J]`` (§3.5); forward through teacher
``t mod M`` (round robin, §3.7) with *its* BN hooks capturing — or, when a loss term selects the voters
(``select_voters(slot, t, M)``: CV-DD's committee, :mod:`reta.synthesis.bn.committee`), through each selected teacher
on the same augmented batch, each with its own hooks (:class:`~reta.synthesis.bn.step.SynthesisStep` ``voters``);
loss = Σ of the loss terms; backward; step; clamp
to the normalised image of [0, 1] (§3.2). A non-finite term stops the run naming it (the last checkpoint stays).
So does divergence with finite losses: when a step leaves at least ``saturation_limit`` of the working batch's
pixels clamped at 0 or 1 (and more than at the job start), the step size has thrown the images out of the data range.
Measured by ``benchmarks/bench_saturation.py`` (Fashion-MNIST, IPC 2, seed 0, 30 steps per job): at most 0.25 / 0.52
(SRe2L / FADRM) with the stock lr, 0.82 / 0.86 at lr = 2.8 (the top of the range ``check_lr`` allows); lr = 1e30
reaches 1.0 and is stopped at step 0 / 4. The run stops naming the
loss term that grew most since its first value in the job; the step's own checkpoint is never written, so the last
good one stays.

**No host-device sync per step** beyond logging intervals: the clamp bounds and the job's class ids are device tensors
made once (per device / per job), the batch-shared crop matrix goes to the device from pinned memory without blocking
(``reta.data.augment._apply_boxes``), and both guards (non-finite terms, saturation) keep each step's evidence on the
device (:meth:`SynthesisModule._record_step`); it is read back, in one transfer, only at logging steps, stage and job
ends and before every resume checkpoint (:meth:`SynthesisModule.check_divergence`). The error still names the first
bad step, its term and value, and a diverged state never reaches a checkpoint or the stored images. Callbacks may
sync: PTA (``reta.synthesis.reta.pta``) computes persistence diagrams on the CPU on every step it applies to.

**Callback API** (duck-typed methods of any Lightning callback in ``trainer.callbacks``; all optional):

* ``on_synthesis_job_start(trainer, module, job: Job)`` — after the job's images were initialised;
* ``on_synthesis_step(trainer, module, step: SynthesisStep)`` — after the built-in loss terms, before backward.
  ``step.images`` is the working parameter (with grad, un-augmented, at ``step.resolution``), ``step.classes``
  its class ids, ``step.slot`` its IPC slot; add a term with ``step.add_loss(name, value, weight)``. For features
  of a separate forward use ``module.teacher_features(x)`` (BN hooks are off outside the teacher's own forward);
* ``on_synthesis_stage_end(trainer, module, event: StageEnd)`` — after a stage's last step; may replace the
  images with ``module.replace_images(new)`` (the residual connection does, at the next resolution);
* ``on_synthesis_job_end(trainer, module, job: Job)`` — after the job's images were stored in ``module.images``.

Callbacks with state implement Lightning's ``state_dict``/``load_state_dict``; it goes into the resume checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import lightning as L
import torch
from torch import nn

from reta.errors import DivergenceError, NonFiniteLossError, RetaError
from reta.models import features
from reta.synthesis.bn.anchors import StageEnd
from reta.synthesis.bn.matching import TeacherSlot
from reta.synthesis.bn.schedule import StageSchedule
from reta.synthesis.bn.step import AugmentSpec, Job, SynthesisStep, Voter, make_jobs, synthesis_augment
from reta.synthesis.pixels import SyntheticImages
from reta.synthesis.runtime import resample
from reta.synthesis.stream import StepStream

log = logging.getLogger(__name__)


class SynthesisModule(L.LightningModule):
    """See the module docstring."""

    def __init__(
        self,
        teachers: Sequence[TeacherSlot],
        schedule: StageSchedule,
        num_classes: int,
        ipc: int,
        image_size: int,
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        init,
        augment: AugmentSpec,
        losses: Sequence,
        betas: tuple[float, float] = (0.5, 0.9),
        eps: float = 1e-8,
        classes_per_batch: int | None = None,
        seed: int = 0,
        patch_bank=None,
        patch_pool=None,
        train_set=None,
        fingerprint: str = "",
        log_every: int = 50,
        shard: tuple[int, int] = (0, 1),
        saturation_limit: float = 0.95,
    ) -> None:
        super().__init__()
        if not teachers:
            raise RetaError("synthesis needs at least one teacher")
        self.automatic_optimization = False
        self.teachers = list(teachers)
        self.teacher_models = nn.ModuleList([t.model for t in self.teachers])
        self.schedule, self.init, self.augment_spec = schedule, init, augment
        self.losses = list(losses)
        selectors = [term for term in self.losses if hasattr(term, "select_voters")]
        if len(selectors) > 1:
            raise RetaError(f"method.losses: at most one term may select the voters, got {[t.name for t in selectors]}")
        self.voter_selector = selectors[0] if selectors else None
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        self.num_classes, self.ipc, self.image_size, self.channels = num_classes, ipc, image_size, channels
        self.images = SyntheticImages(
            torch.zeros(num_classes * ipc, channels, image_size, image_size), num_classes, ipc, mean, std
        )
        self.images.data.requires_grad_(False)
        self.jobs = make_jobs(num_classes, ipc, classes_per_batch)
        rank, world = (int(v) for v in shard)
        if world < 1 or not 0 <= rank < world:
            raise RetaError(f"bad shard {shard}: need 0 <= rank < world")
        self.shard = (rank, world)
        # the jobs this process runs (reta.synthesis.distributed); all when (0, 1)
        self.own_jobs = self.jobs[rank::world]
        self.patch_bank, self.patch_pool, self.train_set = patch_bank, patch_pool, train_set
        self.fingerprint, self.log_every = fingerprint, int(log_every)
        self.seed = int(seed)
        self.gen = torch.Generator().manual_seed(self.seed)
        self.x: nn.Parameter | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.next_step = 0
        self.ckpt_path: str | None = None
        self.job_seconds: list[float] = []
        self._job_t0 = 0.0
        self.saturation_limit = float(saturation_limit)
        self._sat0: torch.Tensor | None = None  # saturated fraction at the job start (divergence guard, on the device)
        self._loss0: dict[str, torch.Tensor] = {}  # loss terms at the job's first step here (names the diverging term)
        self._bounds: tuple[torch.Tensor, torch.Tensor] | None = None  # clamp bounds on the device of x
        self._classes: tuple[int, torch.Tensor] | None = None  # (job index, class ids on the device)
        self._pending: list[dict] = []  # per step since the last check: its losses and saturation, on the device

    # ------------------------------------------------------------------------------------------- plumbing
    @property
    def total_steps(self) -> int:
        """Global steps of this process's stream (its own jobs; every job unsharded)."""
        return len(self.own_jobs) * self.schedule.total

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher_models.eval()
        return self

    def configure_optimizers(self):
        return None  # one fresh Adam per stage, created in _begin_stage (manual optimisation)

    def on_train_start(self) -> None:
        if self.opt is not None:  # resumed on CPU, moved to the device by the trainer: move the moments too
            state = self.opt.state_dict()
            self.opt = torch.optim.Adam([self.x], lr=self.schedule.lr0, betas=self.betas, eps=self.eps)
            self.opt.load_state_dict(state)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(StepStream(self.next_step, self.total_steps), batch_size=None)

    def _callbacks(self) -> list:
        trainer = getattr(self, "_trainer", None)
        return list(trainer.callbacks) if trainer is not None else []

    def _notify(self, hook: str, *args) -> None:
        for cb in self._callbacks():
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self._trainer, self, *args)

    def teacher_features(self, x: torch.Tensor, teacher: TeacherSlot | int | None = None) -> torch.Tensor:
        """Penultimate features of ``x`` (normalised) via :func:`reta.models.features`, BN hooks off (first teacher
        by default). Gradients flow to ``x``."""
        slot = (
            self.teachers[0] if teacher is None
            else (self.teachers[teacher] if isinstance(teacher, int) else teacher)
        )
        if slot.hooks.enabled:
            raise RuntimeError("teacher_features called while BN hooks are capturing")
        return features(slot.model, x)

    def voter_indices(self, slot: int, t: int) -> list[int]:
        """The teachers forwarded at job step ``t`` of IPC ``slot``: the selecting loss term's choice, else the
        rotation's teacher ``t mod M``."""
        if self.voter_selector is not None:
            return list(self.voter_selector.select_voters(slot, t, len(self.teachers)))
        return [t % len(self.teachers)]

    def job_classes(self, job: Job) -> torch.Tensor:
        """The job's class ids on the device (made once per job, not per step)."""
        if self._classes is None or self._classes[0] != job.index or self._classes[1].device != self.device:
            self._classes = (job.index, torch.tensor(job.classes, dtype=torch.long, device=self.device))
        return self._classes[1]

    def replace_images(self, new: torch.Tensor) -> None:
        """Set the working batch (normalised space). Same shape: values copied, optimiser moments kept;
        new shape: a new parameter (its optimiser is created at the next stage start)."""
        new = new.detach().to(self.device)
        if self.x is not None and self.x.shape == new.shape:
            with torch.no_grad():
                self.x.copy_(new)
        else:
            self.x = nn.Parameter(new.clone())
            self.opt = None

    def _bounds_of_x(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._bounds is None or self._bounds[0].device != self.x.device or self._bounds[0].dtype != self.x.dtype:
            m = torch.tensor(self.mean, dtype=self.x.dtype).view(1, -1, 1, 1)
            s = torch.tensor(self.std, dtype=self.x.dtype).view(1, -1, 1, 1)
            self._bounds = (((0 - m) / s).to(self.x.device), ((1 - m) / s).to(self.x.device))
        return self._bounds

    @torch.no_grad()
    def _clamp(self) -> torch.Tensor:
        """Clamp the working batch to the normalised image of [0, 1]; returns the fraction now at either bound
        (a device tensor: no sync)."""
        lo, hi = self._bounds_of_x()
        self.x.copy_(torch.max(torch.min(self.x, hi), lo))
        return self._saturated_fraction()

    @torch.no_grad()
    def _saturated_fraction(self) -> torch.Tensor:
        lo, hi = self._bounds_of_x()
        return ((self.x <= lo) | (self.x >= hi)).float().mean()

    # ------------------------------------------------------------------------------------------- divergence
    @torch.no_grad()
    def _record_step(self, step: SynthesisStep, job: Job) -> dict:
        """Keep this step's evidence for :meth:`check_divergence` on the device (no sync)."""
        if self._sat0 is None:  # first step of the job in this process (also right after a resume)
            self._sat0 = self._saturated_fraction()
        losses = {k: v.detach().float().sum() for k, v in step.losses.items()}
        voters = "+".join(v.teacher.name for v in step.voters)
        for k, v in losses.items():  # each term's first value in this job (a callback's term may start later)
            if k not in self._loss0:
                self._loss0[k] = v
        rec = {"g": step.global_step, "job": job, "stage": step.stage, "lr": step.lr, "teacher": voters,
               "losses": losses, "sat": None, "sat0": self._sat0, "loss0": dict(self._loss0)}
        self._pending.append(rec)
        return rec

    def check_divergence(self) -> None:
        """Read the steps recorded since the last check back in one transfer; raise for the first bad one:
        :class:`NonFiniteLossError` (a non-finite term) or :class:`DivergenceError` (``saturation_limit`` of the
        pixels clamped at 0 or 1, more than at the job start; see the module docstring)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        flags = []
        for rec in pending:
            finite = torch.stack([torch.isfinite(v) for v in rec["losses"].values()]).all() if rec["losses"] else None
            bad_f = ~finite if finite is not None else torch.zeros((), dtype=torch.bool, device=rec["sat0"].device)
            sat = rec["sat"] if rec["sat"] is not None else torch.zeros((), device=rec["sat0"].device)
            bad_s = (sat >= self.saturation_limit) & (sat > rec["sat0"])
            flags.append(torch.stack([bad_f, bad_s]))
        table = torch.stack(flags).tolist()
        for rec, (bad_f, bad_s) in zip(pending, table):
            job = rec["job"]
            where = f"(job {job.index}, slot {job.slot}, stage {rec['stage']}, teacher {rec['teacher']})"
            if bad_f:
                name, value = next((k, float(v)) for k, v in rec["losses"].items() if not bool(torch.isfinite(v)))
                raise NonFiniteLossError(
                    f"loss term {name!r} became {value:g} at step {rec['g']} {where}; "
                    f"last good checkpoint: {self.ckpt_path or 'none'}"
                )
            if bad_s:
                now = {k: float(v) for k, v in rec["losses"].items()}
                first = {k: float(v) for k, v in rec["loss0"].items()}
                growth = {k: abs(v) / max(abs(first.get(k, v)), 1e-12) for k, v in now.items()}
                term = max(growth, key=growth.get) if growth else "none"
                sat, sat0 = float(rec["sat"]), float(rec["sat0"])
                raise DivergenceError(
                    f"synthesis diverged at step {rec['g']} {where}: {sat:.0%} of the pixels are "
                    f"clamped at 0 or 1 (job start: {sat0:.0%}); loss term {term!r} grew x{growth.get(term, 1.0):.3g} "
                    f"in this job (now {now.get(term, float('nan')):.4g}); lower method.lr (now {rec['lr']:g}); last "
                    f"good checkpoint: {self.ckpt_path or 'none'}"
                )

    # ------------------------------------------------------------------------------------------- job flow
    def _begin_job(self, job: Job) -> None:
        # a job's random stream depends on (seed, job) only, not on the jobs run before it in this process, so a
        # sharded run (reta.synthesis.distributed) reproduces the single-process images; resume restores self.gen
        self.gen.manual_seed(self.seed * 1_000_003 + job.index)
        size0 = self.schedule.sizes[0]
        x0 = self.init(list(job.classes), job.slot, size0, self.channels, self.mean, self.std, self.gen)
        self.x, self.opt = nn.Parameter(x0.to(self.device).clone()), None
        self._job_t0 = time.perf_counter()
        self._sat0, self._loss0 = None, {}
        self._notify("on_synthesis_job_start", job)

    def _begin_stage(self, size: int, lr: float) -> None:
        if self.x.shape[-1] != size:
            self.replace_images(resample(self.x.detach(), size))
        self.opt = torch.optim.Adam([self.x], lr=lr, betas=self.betas, eps=self.eps)

    def _end_job(self, job: Job) -> None:
        idx = self.images.index(job.classes, job.slot).to(self.images.data.device)
        with torch.no_grad():
            self.images.data[idx] = resample(self.x.detach(), self.image_size).to(self.images.data)
            self.images.clamp_(idx)
        self.job_seconds.append(time.perf_counter() - self._job_t0)
        self._notify("on_synthesis_job_end", job)

    def training_step(self, batch, batch_idx):
        g = int(batch)
        if g != self.next_step:
            raise RuntimeError(f"synthesis step {g} arrived, expected {self.next_step}")
        T = self.schedule.total
        job, t = self.own_jobs[g // T], g % T
        pos = self.schedule.position(t)
        if t == 0:
            self._begin_job(job)
        if pos.first_in_stage or self.opt is None:
            self._begin_stage(pos.size, pos.lr)
        for group in self.opt.param_groups:
            group["lr"] = pos.lr
        classes = self.job_classes(job)
        augmented = synthesis_augment(self.x, pos.size, self.augment_spec, self.gen)
        voters = []
        for i in self.voter_indices(job.slot, t):
            teacher = self.teachers[i]
            with teacher.hooks.capture():
                voters.append(Voter(i, teacher, teacher.model(augmented)))
        first = voters[0]
        step = SynthesisStep(g, job.index, job.slot, t, pos.stage, pos.size, pos.lr, self.x, augmented, classes,
                             first.teacher, first.index, first.logits, voters=voters)
        for term in self.losses:
            step.add_loss(term.name, term(step))
        self._notify("on_synthesis_step", step)
        record = self._record_step(step, job)
        loss = step.total()
        self.opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        self.opt.step()
        record["sat"] = self._clamp()
        logging_step = bool(self.log_every) and g % self.log_every == 0
        if logging_step or pos.last_in_stage or t == T - 1:  # the only reads of the device (and before checkpoints)
            self.check_divergence()
        if logging_step:
            metrics = {f"loss/{k}": float(v.detach()) for k, v in step.losses.items()}
            metrics.update({"loss/total": float(loss.detach()), "lr": pos.lr, "stage": pos.stage, "job": job.index})
            if self.logger is not None:
                self.logger.log_metrics(metrics, step=g)
            self.log("loss", metrics["loss/total"], prog_bar=True, logger=False)
        if pos.last_in_stage:
            next_size = None if pos.last_stage else self.schedule.sizes[pos.stage + 1]
            self._notify("on_synthesis_stage_end", StageEnd(job.index, job.slot, classes, pos.stage, pos.size,
                                                            next_size, self.x.detach()))
        if t == T - 1:
            self._end_job(job)
            log.info("job %d/%d (slot %d, %d classes) done in %.1f s; last loss %.4f",
                     job.index + 1, len(self.jobs), job.slot, len(job.classes), self.job_seconds[-1],
                     float(loss.detach()))
        self.next_step = g + 1
        return None

    # ------------------------------------------------------------------------------------------- resume
    def synthesis_state(self) -> dict:
        """Everything needed to continue bit-identically after the last finished step."""
        return {
            "format": 1,
            "fingerprint": self.fingerprint,
            "next_step": self.next_step,
            "store": self.images.data.detach().cpu().clone(),
            "x": None if self.x is None else self.x.detach().cpu().clone(),
            "opt": None if self.opt is None else self.opt.state_dict(),
            "gen": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "job_seconds": list(self.job_seconds),
            "job_elapsed": time.perf_counter() - self._job_t0 if self.x is not None else 0.0,  # of the unfinished job
        }

    def load_synthesis_state(self, state: dict) -> None:
        if state.get("fingerprint") != self.fingerprint:
            raise RetaError("resume: the checkpoint was written by a different configuration (method, ipc, seed, "
                            "dataset or teachers changed, or an earlier reta wrote it); pass overwrite=true to start "
                            "again, or another paths.output_dir")
        self.next_step = int(state["next_step"])
        if state.get("store") is not None:
            with torch.no_grad():
                self.images.data.copy_(state["store"])
        self.x = None if state["x"] is None else nn.Parameter(state["x"].to(self.device).clone())
        self.opt = None
        if state["opt"] is not None:
            self.opt = torch.optim.Adam([self.x], lr=self.schedule.lr0, betas=self.betas, eps=self.eps)
            self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        self.job_seconds = list(state.get("job_seconds", []))
        # a job resumed mid-way is timed from its own start (work before the kill + work here), not from t = 0
        self._job_t0 = time.perf_counter() - float(state.get("job_elapsed", 0.0))

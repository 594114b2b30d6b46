"""One large BN-matching distillation sharded over ranks: every rank synthesises a disjoint set of jobs, rank 0
merges them into the one distilled set.

Source: docs/methods.md §1 (last paragraph) and §3.4 — in the BN-matching family every (IPC slot, class chunk) job is
synthesised from scratch and independently of the others, so the jobs shard over ranks without communication
[code: VILA-Lab/SRe2L PR #24 shards by IPC slot ranges]. docs/architecture.md "Scale".

**Who starts the ranks.** SLURM (``srun`` / submitit with ``tasks_per_node`` = shards) or ``torchrun`` — never
Lightning. :func:`init_distributed` reads the standard environment (torchrun: ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``; SLURM: ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``, the
address from the first host of ``SLURM_JOB_NODELIST``) when ``distributed.enabled=true`` and initialises
``torch.distributed`` once. Because no process is ever re-executed by Lightning, the Hydra-multirun + DDP pitfall
(a re-launched ``reta-run -m …`` child re-running the whole sweep) cannot happen.

**Each rank's Trainer stays single-device** (``devices=1``, or the rank's own GPU, with an explicit
single-process :class:`~lightning.fabric.plugins.environments.LightningEnvironment` so Lightning does not read the
SLURM/torchrun variables and try to become distributed itself). No Lightning DDP wrapping: the synthetic pixels of
different ranks are different parameters (different jobs), so DDP's gradient all-reduce would average unrelated
gradients — wrong, not just wasteful.

**Determinism.** A job's random stream depends only on ``(seed, job.index)`` (the module reseeds its generator at
every job start), so the merged set is bit-identical to the single-process set of the same seed on the same
hardware and thread count. Callbacks whose result for a job depends on *other* jobs (RETA's PTA reads the finished
images of a class's earlier slots; DRC with ``reuse`` ≠ ``allow`` excludes anchors earlier slots took) would see a
different history on a shard: :func:`check_shardable` refuses them (each states its conflict through its
``sharding_conflict(module)`` hook) rather than produce a silently different set.

**Collectives** (reta's own) are all on CPU tensors over gloo: a rank-0-first section for cache building (teacher,
patch pool), a status exchange after the fit (a rank that failed makes every rank fail, instead of hanging) and the
gather of the finished images on rank 0, one job per rank per round (bounded message size). With ``backend=nccl``
(the ``auto`` choice on GPUs) the default group is NCCL and reta adds a gloo group for these.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from reta.errors import RetaError
from reta.utils.config import plain
from reta.utils.device import gpu_run

log = logging.getLogger(__name__)

BACKENDS = ("auto", "gloo", "nccl")
DEFAULT_PORT = 29500


def shard_jobs(jobs: Sequence, rank: int, world: int) -> list:
    """The jobs rank ``rank`` of ``world`` runs: ``jobs[rank::world]`` (strided, so slots spread evenly)."""
    rank, world = int(rank), int(world)
    if world < 1 or not 0 <= rank < world:
        raise RetaError(f"bad shard: rank {rank} of world {world}")
    return list(jobs)[rank::world]


def first_host(nodelist: str) -> str:
    """The first host of a SLURM hostlist: ``node[03-05,9],gpu1`` → ``node03``; ``a1,a2`` → ``a1``."""
    nodelist = nodelist.strip()
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\](\S*?))?(?:,|$)", nodelist)
    if not m:
        raise RetaError(f"cannot parse SLURM node list {nodelist!r}; set distributed.master_addr")
    prefix, ranges, suffix = m.group(1), m.group(2), m.group(3) or ""
    if ranges is None:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return f"{prefix}{first}{suffix.split(',')[0]}"


def ranks_from_env(env: Mapping[str, str]) -> tuple[int, int, int]:
    """``(rank, world, local_rank)`` from torchrun's variables, else SLURM's, else ``(0, 1, 0)``."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def master_from_env(env: Mapping[str, str], addr: str | None = None, port: int | None = None) -> tuple[str, int]:
    """Rendezvous address: explicit config > ``MASTER_ADDR``/``MASTER_PORT`` > SLURM (first host of the node list;
    port 15000 + the last 4 digits of the job id, as Lightning does) > ``127.0.0.1:29500``."""
    if addr is None:
        addr = env.get("MASTER_ADDR")
    if addr is None:
        nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        addr = first_host(nodes) if nodes else "127.0.0.1"
    if port is None and env.get("MASTER_PORT"):
        port = int(env["MASTER_PORT"])
    if port is None:
        job = env.get("SLURM_JOB_ID")
        port = 15000 + int(job[-4:]) if job and job[-4:].isdigit() else DEFAULT_PORT
    return str(addr), int(port)


def resolve_backend(backend: str, trainer_cfg: Mapping) -> str:
    if backend not in BACKENDS:
        raise RetaError(f"distributed.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "nccl" if gpu_run(trainer_cfg) else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise RetaError("distributed.backend=nccl needs CUDA; use gloo (or auto) on CPU")
    return backend


@dataclass
class ShardInfo:
    """This process's place in a sharded run; ``ShardInfo()`` = one process, no collectives."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    owned: bool = False  # this ShardInfo initialised the process group (and destroys it)
    group: Any = field(default=None, repr=False)  # gloo group for reta's CPU collectives (None = default group)

    @property
    def sharded(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def jobs(self, jobs: Sequence) -> list:
        return shard_jobs(jobs, self.rank, self.world)

    def checkpoint_subdir(self) -> str | None:
        """Per-rank checkpoint folder name (each rank resumes its own jobs); ``None`` unsharded."""
        return f"shard{self.rank}of{self.world}" if self.sharded else None

    # ---------------------------------------------------------------------------------------- collectives
    def barrier(self) -> None:
        if self.sharded:
            dist.barrier(group=self.group)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.sharded:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def all_gather(self, obj: Any) -> list:
        if not self.sharded:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj, group=self.group)
        return out

    @contextlib.contextmanager
    def main_first(self, what: str) -> Iterator[None]:
        """Rank 0 runs the block first (filling shared caches: teacher, patch pool), then the others; a failure on
        rank 0 makes the others fail at once with its message instead of waiting, a failure on another rank makes
        every rank fail at the end of the block (:meth:`together`)."""
        if not self.sharded:
            yield
            return
        with self.together(what):
            if self.is_main:
                try:
                    yield
                except BaseException as err:
                    self.broadcast(_describe(err))
                    raise
                self.broadcast(None)
            else:
                failed = self.broadcast(None)
                if failed is not None:
                    raise RetaError(f"rank 0 failed while {what}: {failed}")
                yield

    @contextlib.contextmanager
    def together(self, what: str) -> Iterator[None]:
        """Every rank runs the block, then all exchange their status: a rank that raised re-raises its own error,
        the others raise one naming it (no rank is left waiting in a later collective)."""
        if not self.sharded:
            yield
            return
        error: BaseException | None = None
        try:
            yield
        except BaseException as err:  # noqa: BLE001 - re-raised below after the status exchange
            error = err
        statuses = self.all_gather(None if error is None else _describe(error))
        if error is not None:
            raise error
        failed = [(r, s) for r, s in enumerate(statuses) if s is not None]
        if failed:
            r, s = failed[0]
            raise RetaError(f"rank {r} of {self.world} failed while {what} ({s})")

    def gather_images(self, module) -> None:
        """Merge every rank's finished jobs into rank 0's ``module.images`` (and ``module.job_seconds``, in job
        order). One job per rank per round via ``gather_object``, so no message holds more than one job's images.
        Other ranks keep only their own jobs."""
        if not self.sharded:
            return
        own = list(module.own_jobs)
        seconds = dict(zip([j.index for j in own], module.job_seconds)) if len(module.job_seconds) == len(own) else {}
        rounds = math.ceil(len(module.jobs) / self.world)
        store = module.images
        for i in range(rounds):
            mine = None
            if i < len(own):
                job = own[i]
                idx = store.index(job.classes, job.slot).to(store.data.device)
                mine = (job.index, store.data.detach()[idx].cpu().clone(), seconds.get(job.index))
            parts: list | None = [None] * self.world if self.is_main else None
            dist.gather_object(mine, parts, dst=0, group=self.group)
            if not self.is_main:
                continue
            for part in parts:
                if part is None:
                    continue
                index, rows, sec = part
                job = module.jobs[index]
                if not self.owns(index):
                    idx = store.index(job.classes, job.slot).to(store.data.device)
                    with torch.no_grad():
                        store.data[idx] = rows.to(store.data)
                seconds[index] = sec
        if self.is_main and all(seconds.get(j.index) is not None for j in module.jobs):
            module.job_seconds = [seconds[j.index] for j in module.jobs]

    def owns(self, job_index: int) -> bool:
        return int(job_index) % self.world == self.rank

    def destroy(self) -> None:
        """Tear the process group down if this ShardInfo created it (idempotent)."""
        if self.owned and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
            self.owned = False

    # ---------------------------------------------------------------------------------------- trainer
    def trainer_overrides(self, trainer_cfg: Mapping) -> dict:
        """Extra ``L.Trainer`` kwargs of a rank: an explicit single-process cluster environment (Lightning must not
        read ``RANK``/``SLURM_*`` and go distributed itself, nor validate ``--ntasks``) and, on GPUs, the rank's
        own device ``[local_rank]`` (``devices=1`` would put every rank on GPU 0)."""
        if not self.sharded:
            return {}
        from lightning.fabric.plugins.environments import LightningEnvironment

        extra: dict = {"plugins": [LightningEnvironment()]}
        if gpu_run(trainer_cfg):
            extra["devices"] = [self.local_rank % torch.cuda.device_count()]
        return extra


def _describe(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def init_distributed(cfg, env: Mapping[str, str] | None = None) -> ShardInfo:
    """The :class:`ShardInfo` of this process for ``cfg`` (``distributed.*``; absent or ``enabled: false`` → one
    process). Initialises ``torch.distributed`` when the environment names more than one rank; a process group that
    already exists (e.g. set up by the pipeline before its distill step) is reused, not re-created."""
    d = plain(cfg.get("distributed")) or {}
    if not d.get("enabled", False):
        return ShardInfo()
    env = os.environ if env is None else env
    rank, world, local = ranks_from_env(env)
    if world <= 1:
        log.warning("distributed.enabled=true but the environment names one rank (no RANK/WORLD_SIZE or "
                    "SLURM_PROCID/SLURM_NTASKS): running unsharded")
        return ShardInfo()
    if not 0 <= rank < world:
        raise RetaError(f"distributed: rank {rank} outside world size {world}")
    trainer_cfg = plain(cfg.get("trainer")) or {}
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() != world or dist.get_rank() != rank:
            raise RetaError(f"distributed: a process group of rank {dist.get_rank()}/{dist.get_world_size()} exists "
                            f"but the environment says {rank}/{world}")
        backend = str(dist.get_backend())
        group = None if backend == "gloo" else dist.new_group(backend="gloo")
        return ShardInfo(rank, world, local, backend, owned=False, group=group)
    backend = resolve_backend(str(d.get("backend", "auto")), trainer_cfg)
    addr, port = master_from_env(env, d.get("master_addr"), d.get("master_port"))
    if backend == "nccl":
        torch.cuda.set_device(local % torch.cuda.device_count())
    timeout = datetime.timedelta(minutes=float(d.get("timeout_min", 60)))
    log.info("distributed: rank %d of %d (local %d), %s at %s:%d", rank, world, local, backend, addr, port)
    dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank, world_size=world, timeout=timeout)
    group = None if backend == "gloo" else dist.new_group(backend="gloo", timeout=timeout)
    return ShardInfo(rank, world, local, backend, owned=True, group=group)


def check_shardable(module, callbacks: Sequence, shard: ShardInfo) -> None:
    """Refuse callbacks whose effect on a job depends on other jobs (a shard would see another history): every
    callback may define ``sharding_conflict(module) -> str | None`` and states its own reason there."""
    if not shard.sharded:
        return
    problems: list[str] = []
    for cb in callbacks:
        hook = getattr(cb, "sharding_conflict", None)
        reason = hook(module) if callable(hook) else None
        if reason:
            problems.append(reason)
    if problems:
        raise RetaError("distributed synthesis would differ from the single-process run: " + "; ".join(problems))

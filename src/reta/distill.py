"""Distill stage as a plain function: ``run(cfg) -> dict`` writes ``<output_dir>/distilled/`` (format v1)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from omegaconf import DictConfig, open_dict

import reta
from reta.data.distilled import save_distilled
from reta.data.holdout import check_holdout, split_holdout
from reta.data.registry import load_split
from reta.errors import RetaError
from reta.synthesis.distributed import ShardInfo, init_distributed
from reta.synthesis.registry import DistillContext, is_shardable, synthesis_function
from reta.synthesis.runtime import SynthesisClock, optimisation_fields
from reta.synthesis.snapshots import check_snapshots, snapshot_dir
from reta.tracking import log_distilled_artifact
from reta.training.common import configure_data, set_threads
from reta.training.teacher_cache import TeacherLoader
from reta.utils.config import config_digest, output_dir, plain, planned_output_dir, require_positive_int
from reta.utils.io import atomic_write_json
from reta.utils.outputs import check_writable_cache, check_writable_dir
from reta.utils.signals import requeued

log = logging.getLogger(__name__)

#: ``<output_dir>/checkpoints/run.json``: the resume key of the run that owns the checkpoints (written at its start).
RUN_RECORD = "run.json"


def config_hash(cfg: DictConfig) -> str:
    keep = {k: plain(cfg[k]) for k in ("dataset", "model", "recipe", "method", "ipc", "seed") if k in cfg}
    return config_digest(keep)


#: the sections of :func:`resume_key` every run has (a family adds its ``resume_config`` sections)
BASE = ("dataset", "model", "recipe", "teacher", "method", "ipc", "seed")


def resume_key(cfg: DictConfig) -> dict:
    """What a resumed run must share with the run that wrote the checkpoints, known before any data or teacher is
    loaded: dataset, teacher (model, recipe, ``teacher.seed`` / ``teacher.checkpoint``), method (without its logging
    and checkpoint cadence), ipc and seed, plus the sections the method's family declares in ``resume_config`` (the
    frozen family: ``backbone``). The method families check their own fingerprint again on load."""
    method = optimisation_fields(plain(cfg.method) or {})
    teacher = plain(cfg.get("teacher")) or {}
    fn = synthesis_function(cfg.method)
    extra = getattr(getattr(fn, "func", fn), "resume_config", ())  # e.g. the frozen family's backbone
    return {"dataset": plain(cfg.dataset).get("name"), "model": plain(cfg.model), "recipe": plain(cfg.recipe),
            "teacher": {k: teacher.get(k) for k in ("seed", "checkpoint")}, "method": method,
            "ipc": cfg.ipc, "seed": cfg.seed, **{k: plain(cfg.get(k)) for k in extra}}


def _describe_set(meta_path: Path) -> str:
    try:
        meta = json.loads(meta_path.read_text())
        return f" ({meta.get('method')}, IPC {meta.get('ipc')}, seed {meta.get('seed')})"
    except (OSError, ValueError, AttributeError):
        return ""


def check_method(cfg: DictConfig):
    """The method's synthesis function, after its family checked ``cfg.method`` (keys, types, ranges, the per-IPC
    block) — no data or teacher is loaded."""
    fn = synthesis_function(cfg.method)
    if not isinstance(cfg.method.get("requires_teacher"), bool):
        raise RetaError("method.requires_teacher: missing; a method config declares whether the pipeline squeezes "
                        "the run's teacher first (true | false)")
    check_snapshots(cfg, fn)
    check = getattr(getattr(fn, "func", fn), "check_config", None)
    if check is not None:
        check(cfg)
    return fn


def preflight(cfg: DictConfig, out: Path) -> None:
    """Every check that needs no data, no teacher and writes nothing; run before Hydra writes its run dir
    (:class:`reta.cli.common.Preflight`) and again at the start of :func:`run`. Refuses (one line) a bad ``ipc``, an
    output dir that cannot be written, a finished or interrupted run in ``out`` without ``resume=true`` or
    ``overwrite=true``, and ``resume=true`` on checkpoints written by a different configuration."""
    require_positive_int(cfg.ipc, "ipc")
    check_method(cfg)
    resume, overwrite = bool(cfg.get("resume", False)) or resumes_requeued(cfg, out), bool(cfg.get("overwrite", False))
    if resume and overwrite:
        raise RetaError("resume=true and overwrite=true exclude each other: resume continues the run in "
                        "paths.output_dir, overwrite replaces it")
    check_writable_dir(out, ("distilled", "checkpoints", "snapshots"))
    check_writable_cache(cfg)
    ckpts = out / "checkpoints"
    finished = (out / "distilled" / "meta.json").is_file()
    snapshots = out / "snapshots"
    interrupted = ((ckpts.is_dir() and any(p.is_file() and p.name != RUN_RECORD for p in ckpts.rglob("*")))
                   or (snapshots.is_dir() and any(snapshots.iterdir())))
    if (finished or interrupted) and not (resume or overwrite):
        what = (f"a finished distilled set{_describe_set(out / 'distilled' / 'meta.json')}" if finished
                else "an interrupted run (checkpoints/ or snapshots/)")
        raise RetaError(f"paths.output_dir {out} already holds {what}; pass resume=true to continue that run, "
                        "overwrite=true to replace it, or choose another paths.output_dir")
    record = ckpts / RUN_RECORD
    if resume and record.is_file():
        try:
            saved = json.loads(record.read_text())["key"]
        except (OSError, ValueError, KeyError, TypeError):
            raise RetaError(f"resume: cannot read {record}; pass overwrite=true to start the run again") from None
        key = json.loads(json.dumps(resume_key(cfg), default=str))
        # a record written before a family declared its resume_config sections lacks them: not a change
        changed = sorted(k for k in set(key) | set(saved) if key.get(k) != saved.get(k) and (k in saved or k in BASE))
        if changed:
            detail = "; ".join(_what_changed(k, saved.get(k), key.get(k)) for k in changed)
            raise RetaError(f"resume: the checkpoints in {ckpts} were written by a different configuration "
                            f"({', '.join(changed)} changed): {detail}; pass the same settings, overwrite=true to "
                            "replace that run, or another paths.output_dir")


def _what_changed(name: str, was, now, limit: int = 4) -> str:
    """``name.key: was → now`` for the first ``limit`` differing leaves of two resume-key values."""
    diffs: list[str] = []

    def walk(path: str, a, b) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(f"{path}.{k}", a.get(k), b.get(k))
        elif a != b:
            diffs.append(f"{path}: {json.dumps(a, default=str)} → {json.dumps(b, default=str)}")

    walk(name, was, now)
    return ", ".join(diffs[:limit]) + (f" (+{len(diffs) - limit} more)" if len(diffs) > limit else "")


def resumes_requeued(cfg: DictConfig, out: Path) -> bool:
    """A job that SLURM requeued (preemption, time-out; :func:`reta.utils.signals.requeued`) and that finds its own
    run record in ``out/checkpoints`` continues that run as with ``resume=true`` (the record is still checked)."""
    return (requeued() > 0 and not cfg.get("overwrite", False) and not cfg.get("resume", False)
            and (out / "checkpoints" / RUN_RECORD).is_file())


def apply_requeue(cfg: DictConfig, out: Path) -> None:
    """Set ``resume=true`` in ``cfg`` for a requeued job (:func:`resumes_requeued`), saying so in the log."""
    if resumes_requeued(cfg, out):
        log.warning("SLURM requeued this job (restart %d): resuming the run in %s", requeued(), out)
        with open_dict(cfg):
            cfg.resume = True


def run(cfg: DictConfig) -> dict:
    """Synthesise and write the set. With ``distributed.enabled=true`` and several ranks in the environment
    (torchrun / srun, :mod:`reta.synthesis.distributed`) the jobs are sharded; only rank 0 writes ``distilled/``, the
    other ranks return a summary with ``distilled: None``."""
    return sharded_run(cfg, preflight, _run)


def sharded_run(cfg: DictConfig, check, body) -> dict:
    """Resume a requeued SLURM job, run ``check(cfg, out)`` on every rank before any rank writes
    (:func:`init_distributed` waits for all), then ``body(cfg, shard)`` inside the process group."""
    apply_requeue(cfg, planned_output_dir(cfg))
    check(cfg, planned_output_dir(cfg))
    shard = init_distributed(cfg)
    try:
        return body(cfg, shard)
    finally:
        shard.destroy()


def _run(cfg: DictConfig, shard: ShardInfo) -> dict:
    set_threads(cfg.get("num_threads"))
    configure_data(cfg)
    ipc = require_positive_int(cfg.ipc, "ipc")
    fn = check_method(cfg)
    if shard.sharded and not is_shardable(fn):
        raise RetaError(f"distributed.enabled=true shards only BN-matching methods (sre2l, fadrm, fadrm_plus, reta), "
                        f"not {cfg.method.name}; run it in one process")
    holdout = check_holdout(cfg.get("holdout_per_class", 0))
    full_train = load_split(cfg.dataset, "train", cfg.paths.data_dir)
    test = load_split(cfg.dataset, "test", cfg.paths.data_dir)
    train, _ = split_holdout(full_train, holdout)  # synthesis never sees the held-out images
    smallest = int(min((train.targets == c).sum() for c in range(int(cfg.dataset.num_classes))))
    if ipc > smallest:
        raise RetaError(f"ipc={ipc} exceeds the smallest class of {cfg.dataset.name} ({smallest} images)")
    out = Path(shard.broadcast(str(output_dir(cfg))))  # sharded: every rank uses rank 0's run dir
    ckpt_dir = out / "checkpoints" / shard.checkpoint_subdir() if shard.sharded else out / "checkpoints"
    load = TeacherLoader(cfg, full_train, test)  # teachers: the whole training split (one cache entry)
    ds = plain(cfg.dataset)
    class_names = ds["class_names"] or train.class_names

    def set_meta(result_meta: dict, seconds: float) -> dict:
        return {
            "dataset": ds["name"],
            "num_classes": ds["num_classes"],
            "ipc": ipc,
            "mean": ds["mean"],
            "std": ds["std"],
            "method": cfg.method.name,
            "method_config": plain(cfg.method),
            "seed": int(cfg.seed),
            "config_hash": config_hash(cfg),
            "package_version": reta.__version__,
            "synthesis_seconds": round(seconds, 2),  # all resumes together, without teacher_seconds
            "teacher_seconds": round(load.seconds, 2),
            "shards": shard.world,
            "holdout_per_class": holdout,
            **result_meta,
        }

    def save_snapshot(result, iteration: int) -> Path:
        return save_distilled(snapshot_dir(out, iteration) / "distilled", result.images, result.labels,
                              set_meta(result.meta, ctx.clock.elapsed()), result.soft_labels, class_names=class_names)

    ctx = DistillContext(train, test, out, ckpt_dir, load, shard=shard, teacher_timing=load.timing,
                         clock=SynthesisClock(lambda: load.seconds), save_snapshot=save_snapshot)
    if shard.is_main:
        for old in ("checkpoints", "snapshots"):  # the old run's state and sets must not leak into this one
            if cfg.get("overwrite", False) and (out / old).is_dir():
                shutil.rmtree(out / old)
        record = out / "checkpoints" / RUN_RECORD
        if not (cfg.get("resume", False) and record.is_file()):
            atomic_write_json(record, {"key": resume_key(cfg)})
    ctx.clock.start()
    result = fn(cfg, ctx)
    seconds = ctx.clock.elapsed()  # with the seconds before any resume, without teacher_seconds
    meta = set_meta(result.meta, seconds)
    if not shard.is_main:  # rank 0 writes the merged set
        return {"distilled": None, "rank": shard.rank, "shards": shard.world, "seconds": seconds,
                "method": cfg.method.name, "ipc": ipc}
    path = save_distilled(out / "distilled", result.images, result.labels, meta, result.soft_labels,
                          class_names=class_names)
    print(f"distilled set ({cfg.method.name}, IPC {ipc}): {path}  grid: {path / 'grid.png'}")
    artifact = log_distilled_artifact(plain(cfg.logger), out, path, meta)
    return {"distilled": str(path), "seconds": seconds, "wandb_artifact": artifact,
            **{k: v for k, v in meta.items() if k != "method_config"}}

"""Run a matcher (a plain state + step object) under a Lightning Trainer with resume — the piece the DM family and
the process-matching family (DC, DSA, MTT) share.

A matcher has ``iteration``, ``state_dict()`` / ``load_state_dict()`` (with a ``fingerprint`` check) and a
``step()``; its Lightning module (:class:`reta.synthesis.matcher_module.MatcherModule`) routes the
backward and the optimiser steps through the precision plugin. :func:`fit_matcher` loads
``<ckpt_dir>/last.ckpt`` under the one resume policy (:func:`reta.synthesis.runtime.resume_from`), runs the
remaining iterations with a
:class:`~reta.synthesis.checkpoint.PeriodicCheckpoint` every ``checkpoint_every`` iterations, and deletes the
checkpoint once the run is finished (the distilled set is then the artifact). With ``snapshots=[…]`` the set so far is
also written after those iterations (:mod:`reta.synthesis.snapshots`).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch

from reta.errors import NonFiniteLossError, RetaError, load_failure
from reta.synthesis.checkpoint import PeriodicCheckpoint
from reta.synthesis.registry import DistillContext, SynthesisResult, synthesis_function
from reta.synthesis.runtime import resume_from
from reta.synthesis.snapshots import SnapshotWriter, check_snapshots
from reta.training.common import build_logger, build_trainer
from reta.utils.config import plain
from reta.utils.device import run_device

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.ckpt"
#: Lightning warnings that are expected here (the step stream has no __len__ for the progress bar's total otherwise).
QUIET_WARNINGS = (".*IterableDataset.*__len__.*",)


def matcher_device(cfg) -> torch.device:
    """The device a matcher runs on (the one GPU rule, :func:`reta.utils.device.run_device`)."""
    return torch.device(run_device(plain(cfg.get("trainer", {}) or {})))


@dataclass
class FitResult:
    trainer: L.Trainer
    resumed_from: int | None
    seconds_per_iteration: float | None


def load_resume(cfg, ctx: DistillContext, matcher, device: torch.device, name: str) -> int | None:
    """Restore ``matcher`` from the checkpoint the resume policy (:func:`reta.synthesis.runtime.resume_from`) picks
    and return its iteration; None when the run starts from scratch."""
    ckpt = resume_from(ctx.ckpt_dir / CHECKPOINT_NAME, bool(cfg.get("resume", False)))
    if ckpt is None:
        return None
    try:
        state = torch.load(ckpt, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for corrupt or non-tensor files
        raise RetaError(f"resume: cannot read {ckpt} ({load_failure(err)}); use overwrite=true to start again") from err
    matcher.load_state_dict(state)
    ctx.clock.restore(state, ckpt)
    log.info("resumed %s from %s at iteration %d", name, ckpt, matcher.iteration)
    return matcher.iteration


def fit_matcher(cfg, ctx: DistillContext, matcher, module: L.LightningModule, device: torch.device,
                iterations: int, checkpoint_every: int, name: str, fields: Callable[[], dict]) -> FitResult:
    """Resume (see :func:`load_resume`), then fit ``module`` until ``matcher.iteration == iterations``; ``fields()``
    is the family's own ``meta.json`` block of the set as it stands (for the budget snapshots)."""
    resumed_from = load_resume(cfg, ctx, matcher, device, name)
    ckpt = ctx.ckpt_dir / CHECKPOINT_NAME
    ctx.ckpt_dir.mkdir(parents=True, exist_ok=True)
    logger = build_logger(plain(cfg.logger), str(ctx.out_dir), "distill")
    callbacks: list[L.Callback] = []
    at = check_snapshots(cfg, synthesis_function(cfg.method), iterations)
    if at:  # before the checkpoint: a kill between the two re-runs that iteration, so its snapshot is not lost
        def make():
            return snapshot_result(matcher, device, fields())

        callbacks.append(SnapshotWriter(at, lambda: matcher.iteration, make, ctx.save_snapshot, ctx.out_dir))
    callbacks.append(PeriodicCheckpoint(ckpt, checkpoint_every, iterations, final=False, clock=ctx.clock))
    trainer = build_trainer(plain(cfg.trainer), 1, logger, bool(cfg.get("progress_bar", False)), str(ctx.out_dir),
                            callbacks=callbacks, log_every_n_steps=1)
    start_it, t0 = matcher.iteration, time.perf_counter()
    if matcher.iteration < iterations:
        with warnings.catch_warnings():
            for msg in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=msg)
            try:
                trainer.fit(module)
            except NonFiniteLossError as err:  # the checkpoint of the last good iteration stays: say where it is
                kept = ckpt if ckpt.is_file() else None
                raise NonFiniteLossError(f"{err}; last good checkpoint: {kept or 'none'}") from None
    done = matcher.iteration - start_it
    sec_per_it = (time.perf_counter() - t0) / done if done else float("nan")
    if ckpt.is_file():
        ckpt.unlink()  # finished: the distilled set is the artifact
    return FitResult(trainer, resumed_from, round(sec_per_it, 4) if math.isfinite(sec_per_it) else None)


def matcher_result(matcher, fit: FitResult, device: torch.device, fields: dict) -> SynthesisResult:
    """The distilled set of a finished matcher and its ``meta.json`` block: the family's own ``fields``, then what
    every matcher records (iterations, speed, device, precision, loss history, resume point and, for ``init=real``,
    the indices of the real images it started from)."""
    meta = {
        "iterations": matcher.spec.iterations,
        **fields,
        "seconds_per_iteration": fit.seconds_per_iteration,
        "device": str(device),
        "precision": str(fit.trainer.precision),
        "loss_history": matcher.history,
        "resumed_from_iteration": fit.resumed_from,
    }
    return _with_images(matcher, meta)


def snapshot_result(matcher, device: torch.device, fields: dict) -> SynthesisResult:
    """The set of a running matcher after ``matcher.iteration`` iterations, with the family's ``fields``: ``iterations``
    is the snapshot's, ``snapshot_of`` the run's full budget."""
    meta = {"iterations": matcher.iteration, "snapshot_of": matcher.spec.iterations, **fields, "device": str(device),
            "loss_history": list(matcher.history)}
    return _with_images(matcher, meta)


def _with_images(matcher, meta: dict) -> SynthesisResult:
    """The matcher's images (clamped to [0, 1] or not, as its spec says) and labels with ``meta`` completed."""
    meta = dict(meta)
    if matcher.init_indices is not None:
        meta["init_indices"] = matcher.init_indices
    clamp = bool(matcher.spec.clamp_output)  # false: the optimised images as they are (the DC/DSA/MTT/DM references)
    images = matcher.images.pixels(clamp=clamp).cpu()
    if not clamp:
        meta["clamped"] = False
        meta["out_of_range_fraction"] = round(float(((images < 0) | (images > 1)).float().mean()), 6)
    return SynthesisResult(images, matcher.images.labels, meta)

"""Experiment tracking beyond scalar metrics: the distilled set as a Weights & Biases dataset artifact.

With ``logger=wandb`` (and ``logger.artifact: true``, the default) :func:`log_distilled_artifact` adds the finished
``distilled/`` folder (images.pt, labels.pt, meta.json, grid.png, PNG tree) to the distillation's W&B run as an
artifact of type ``dataset`` named ``distilled-<dataset>-<method>-ipc<N>-seed<S>``; W&B versions repeated uploads of
the same name (v0, v1, …). Offline runs (no API key) keep it in the local run folder for ``wandb sync``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from reta.training.common import build_logger

ARTIFACT_META_KEYS = ("dataset", "num_classes", "ipc", "method", "seed", "config_hash", "package_version",
                      "synthesis_seconds", "teacher_seconds", "shards")


def artifact_name(meta: Mapping) -> str:
    raw = f"distilled-{meta['dataset']}-{meta['method']}-ipc{meta['ipc']}-seed{meta['seed']}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)


def log_distilled_artifact(
    logger_cfg: Mapping | None, out_dir: str | Path, path: str | Path, meta: Mapping
) -> str | None:
    """Log ``path`` as a W&B dataset artifact to the active run (opened through the ``logger`` config when the
    method's own loop did not start one); returns the artifact name, or ``None`` when the logger is not W&B."""
    cfg = dict(logger_cfg or {})
    if not str(cfg.get("_target_") or "").endswith("WandbLogger") or not cfg.get("artifact", True):
        return None
    import wandb

    run = wandb.run if wandb.run is not None else build_logger(cfg, str(out_dir), "distill").experiment
    name = artifact_name(meta)
    art = wandb.Artifact(name, type="dataset", description=f"reta distilled set ({meta['method']}, IPC {meta['ipc']})",
                         metadata={k: meta[k] for k in ARTIFACT_META_KEYS if k in meta})
    art.add_dir(str(path))
    run.log_artifact(art)
    return name

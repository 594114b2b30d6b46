"""Hydra multirun sweeps: a failing job does not stop the others. The job prints its one line (``error: sweep job N:
…``), leaves ``job_error.json`` in its job dir and returns; once every job ran, :class:`SweepFailures` lists the failed
jobs by number and swept override and ends the sweep with exit status 2. The marker files make this work for launchers
that run jobs in other processes too (submitit / SLURM), as long as the sweep dir is on a shared file system."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

MARKER = "job_error.json"
_SWEEP_SYNTAX = (",", "choice(", "range(", "interval(", "glob(")


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(message: str) -> str:
    """Leave the failure of this multirun job in its job dir; returns the line to print."""
    hc = HydraConfig.get()
    num = int(hc.job.num)
    out = Path(str(hc.runtime.output_dir))
    out.mkdir(parents=True, exist_ok=True)
    record = {"job": num, "overrides": list(hc.overrides.task), "error": message}
    (out / MARKER).write_text(json.dumps(record))
    return f"error: sweep job {num}: {message}"


def _swept_keys(task_overrides: list[str]) -> set[str]:
    keys = set()
    for o in task_overrides:
        key, _, value = o.partition("=")
        if value and (any(s in value for s in _SWEEP_SYNTAX)):
            keys.add(key.lstrip("+~"))
    return keys


class SweepFailures(Callback):
    """Hydra callback (``hydra.callbacks.sweep_failures``): after the last job of a multirun, one line naming every
    failed job by number and its swept overrides, and exit status 2."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None
        self.swept: set[str] = set()

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.swept = _swept_keys(list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False)))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.sweep_dir is None or not self.sweep_dir.is_dir():
            return
        failed = []
        for marker in self.sweep_dir.glob(f"*/{MARKER}"):
            try:
                failed.append(json.loads(marker.read_text()))
            except (OSError, ValueError):
                failed.append({"job": marker.parent.name, "overrides": [], "error": "unreadable record"})
        if not failed:
            return
        jobs = [p for p in self.sweep_dir.iterdir() if (p / ".hydra").is_dir()]
        labels = []
        for rec in sorted(failed, key=lambda r: str(r["job"]).zfill(8)):
            shown = [o for o in rec["overrides"] if o.partition("=")[0].lstrip("+~") in self.swept]
            labels.append(f"job {rec['job']} ({' '.join(shown) or 'no swept overrides'})")
        print(f"error: {len(failed)} of {len(jobs)} sweep jobs failed: {', '.join(labels)}; their errors are above "
              f"and in {self.sweep_dir}/<job>/{MARKER}", file=sys.stderr)
        sys.exit(2)

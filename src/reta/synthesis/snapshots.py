"""Budget snapshots: the set as it stands after chosen iterations of one run (``reta-distill snapshots=[100,200,500]``),
each written as a complete distilled set to ``<output_dir>/snapshots/it<N>/distilled/`` while the run goes on, so one
run gives accuracy against budget (``reta-evaluate distilled=…/snapshots/it100/distilled``). A snapshot's images (and
MTT's learnt lr) are those of the run stopped at N; its ``meta.json`` records ``iterations: N`` (reta-report's budget
column) and ``snapshot_of`` (the run's full budget), and ``reta-evaluate`` labels its row ``<method>_it<N>``.

The matcher families (DM/IDM/IID, DC/DSA, MTT) declare the capability on their synthesis function
(``synthesize.snapshots = True``, read by :func:`check_snapshots`); a method whose set exists only at the end (the BN
family's stage schedule, RDED) is refused at start. Snapshots change what a run writes, not its images: a resumed run
may add or drop them, and a snapshot iteration met again after a resume from an earlier checkpoint is written again
with the same images (the run is deterministic).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
from omegaconf import ListConfig

from reta.errors import RetaError

log = logging.getLogger(__name__)


def snapshot_dir(out_dir: Path, iteration: int) -> Path:
    return Path(out_dir) / "snapshots" / f"it{iteration}"


def check_snapshots(cfg, fn: Callable, iterations: int | None = None) -> list[int]:
    """``cfg.snapshots`` as a sorted list of iterations: positive integers below ``iterations`` (the run's final set
    is written anyway), and only for a synthesis function that declares ``snapshots = True``."""
    given = cfg.get("snapshots")
    if given is None or (isinstance(given, (list, ListConfig)) and len(given) == 0):
        return []
    if not isinstance(given, (list, ListConfig)):
        raise RetaError(f"snapshots must be a list of positive iteration counts, e.g. [100,200,500], got {given!r}")
    given = list(given)
    if not getattr(getattr(fn, "func", fn), "snapshots", False):
        raise RetaError(f"snapshots={given}: method {cfg.method.name} writes its set only at the end; the "
                        "iteration-based families write budget snapshots (DM/IDM/IID, DC/DSA, MTT)")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in given):
        raise RetaError(f"snapshots must be a list of positive iteration counts, e.g. [100,200,500], "
                        f"got {given}")
    at = sorted(set(given))
    if iterations is not None and at[-1] >= iterations:
        raise RetaError(f"snapshots={at}: each must be below method.iterations={iterations} (the final set at "
                        f"{iterations} is written anyway)")
    return at


class SnapshotWriter(L.Callback):
    """After a step that ends at one of the ``at`` iterations, ``save(make(), iteration)`` (the set so far as a
    :class:`~reta.synthesis.registry.SynthesisResult`, written by the distill stage as a complete set). A run that
    resumes exactly at one of them (its checkpoint was written there, the snapshot not: a kill in between, or
    snapshots asked for on resume) writes it at the start. Registered before the checkpoint callback, so at an
    iteration with both the snapshot is written first."""

    def __init__(self, at: list[int], iteration: Callable[[], int], make: Callable, save: Callable,
                 out_dir: Path) -> None:
        self.at, self.iteration, self.make, self.save, self.out_dir = set(at), iteration, make, save, Path(out_dir)

    def _write(self, n: int) -> None:
        log.info("snapshot of iteration %d: %s", n, self.save(self.make(), n))

    def on_train_start(self, trainer, pl_module) -> None:
        n = self.iteration()
        if n in self.at and not (snapshot_dir(self.out_dir, n) / "distilled" / "meta.json").is_file():
            self._write(n)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        n = self.iteration()
        if n in self.at:
            self._write(n)

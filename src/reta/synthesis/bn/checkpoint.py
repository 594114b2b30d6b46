"""Resume checkpoints of a synthesis run: ``<ckpt_dir>/last.ckpt`` every N steps, written atomically.

A checkpoint holds :meth:`SynthesisModule.synthesis_state` (the working batch, optimiser moments, stage/step
position via the global step, generator and torch RNG states, a config fingerprint) plus the ``state_dict()`` of
every callback that has one (residual/anchor state, RETA caches) and the synthesis seconds so far
(:class:`reta.synthesis.runtime.SynthesisClock`). The finished images change only at job ends, so
they go to a separate ``store.pt`` written at every job end (before ``last.ckpt``): frequent checkpoints stay small
even when the distilled set is large. A ``store.pt`` one job ahead of ``last.ckpt`` (killed in between) is harmless:
the resumed job rewrites its own slots. Loading it before
``trainer.fit`` makes the fit loop continue at the next global step, so an interrupted run ends with exactly the
images of an uninterrupted one. A step that raises (e.g. a non-finite loss) never reaches ``on_train_batch_end``,
so the last good checkpoint is kept. [recon; docs/architecture.md "Contracts" for atomic writes]
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch

from reta.errors import CheckpointError, load_failure
from reta.synthesis.checkpoint import ResumeCheckpoint
from reta.synthesis.runtime import SynthesisClock
from reta.utils.io import atomic_torch_save

log = logging.getLogger(__name__)


class SynthesisCheckpoint(ResumeCheckpoint):
    """Save the synthesis state to ``path`` every ``every_n_steps`` global steps and at every job end;
    ``every_n_steps=0`` = never (no resume point; the DM family reads ``checkpoint_every: 0`` the same way);
    ``clock`` stamps each checkpoint with the synthesis seconds so far. SIGTERM and SIGUSR1 write it too
    (:class:`reta.synthesis.checkpoint.ResumeCheckpoint`)."""

    def __init__(self, path: str | Path, every_n_steps: int, clock: SynthesisClock) -> None:
        if int(every_n_steps) < 0:
            raise ValueError(f"every_n_steps must be >= 0 (0 = never), got {every_n_steps}")
        super().__init__(path, clock)
        self.every = int(every_n_steps)

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        pl_module.ckpt_path = str(self.path) if self.path.is_file() else None

    def save(self, trainer: L.Trainer, pl_module) -> None:
        """The state after the last finished step, with the finished images (a diverged state is never written)."""
        pl_module.check_divergence()
        atomic_torch_save(pl_module.images.data.detach().cpu(), store_path(self.path))
        save_synthesis_checkpoint(self.path, trainer, pl_module, self.clock)
        pl_module.ckpt_path = str(self.path)

    def periodic(self, trainer: L.Trainer, pl_module) -> None:
        if self.every == 0:
            return
        n = pl_module.next_step
        job_end = n % pl_module.schedule.total == 0
        if job_end or n % self.every == 0:
            pl_module.check_divergence()  # a diverged state is never written (the module checks lazily, on the device)
        if job_end:
            atomic_torch_save(pl_module.images.data.detach().cpu(), store_path(self.path))
        if job_end or n % self.every == 0:
            save_synthesis_checkpoint(self.path, trainer, pl_module, self.clock)
            pl_module.ckpt_path = str(self.path)


def store_path(ckpt: Path) -> Path:
    return Path(ckpt).with_name("store.pt")


def _stateful(trainer: L.Trainer) -> dict:
    return {cb.state_key: cb for cb in trainer.callbacks if type(cb).state_dict is not L.Callback.state_dict}


def save_synthesis_checkpoint(path: Path, trainer: L.Trainer, module, clock: SynthesisClock) -> None:
    module_state = {k: v for k, v in module.synthesis_state().items() if k != "store"}
    state = {"module": module_state, "callbacks": {k: cb.state_dict() for k, cb in _stateful(trainer).items()}}
    atomic_torch_save(clock.stamp(state), path)


def load_synthesis_checkpoint(path: str | Path, module, callbacks: list, clock: SynthesisClock) -> None:
    """Restore ``module``, the stateful ``callbacks`` and ``clock``'s seconds so far from ``path`` (before
    ``trainer.fit``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        store = store_path(path)
        state["module"]["store"] = torch.load(store, map_location="cpu", weights_only=True) if store.is_file() else None
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CheckpointError(f"resume: cannot read {path} or its store.pt ({load_failure(err)}); use overwrite=true "
                              "to start again") from err
    module.load_synthesis_state(state["module"])
    clock.restore(state, path)
    saved = state.get("callbacks", {})
    for cb in callbacks:
        if cb.state_key in saved:
            cb.load_state_dict(saved[cb.state_key])
    log.info("resumed synthesis from %s at global step %d", path, module.next_step)

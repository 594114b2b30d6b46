"""The resume checkpoint callbacks of the synthesis families.

:class:`ResumeCheckpoint` is what they share: on SIGTERM (:mod:`reta.utils.signals`) the state after the last
finished step is written whatever the periodic cadence is (the run then ends with exit 143), and on SIGUSR1
(:class:`reta.utils.signals.CheckpointSignal`) it is written at the next step boundary while the run goes on.
:class:`PeriodicCheckpoint` serves the families that keep their state in a plain dict (DM, DC/DSA/MTT, the
frozen-backbone family): every ``every`` steps (0 = never) the module's ``resume_state()`` is written atomically.
A step that raises never reaches these hooks, so the last good checkpoint is kept. Every checkpoint carries the
synthesis seconds spent so far (:class:`reta.synthesis.runtime.SynthesisClock`)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from reta.synthesis.runtime import SynthesisClock
from reta.utils.io import atomic_torch_save
from reta.utils.signals import CHECKPOINT_SIGNAL, CheckpointSignal, is_sigterm, note_saved

log = logging.getLogger(__name__)


class ResumeCheckpoint(L.Callback):
    """Writes :meth:`save` to ``path`` on SIGTERM and on SIGUSR1; subclasses add their cadence in :meth:`periodic`."""

    def __init__(self, path: str | Path, clock: SynthesisClock) -> None:
        self.path, self.clock = Path(path), clock
        self._signal = CheckpointSignal()

    def save(self, trainer: L.Trainer, pl_module) -> None:
        raise NotImplementedError

    def periodic(self, trainer: L.Trainer, pl_module) -> None:
        """The checkpoint cadence after a finished step (none here)."""

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self._signal.install()

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self._signal.restore()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._signal.take():
            self.save(trainer, pl_module)
            log.warning("%s: resume checkpoint written to %s; the run goes on (SIGTERM would end it with exit 143)",
                        CHECKPOINT_SIGNAL.name, self.path)
        else:
            self.periodic(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        self._signal.restore()
        if is_sigterm(exception):
            self.save(trainer, pl_module)
            note_saved(self.path)


class PeriodicCheckpoint(ResumeCheckpoint):
    """Save ``pl_module.resume_state()`` to ``path`` when ``pl_module.steps_done`` is a multiple of ``every``
    (``0`` = never) and, with ``final=True``, after the last of ``total`` steps; ``final=False`` skips the last step
    (a finished run's set is the artifact); ``clock`` stamps each checkpoint with the synthesis seconds so far."""

    def __init__(self, path: str | Path, every: int, total: int, final: bool, clock: SynthesisClock) -> None:
        super().__init__(path, clock)
        self.every, self.total, self.final = int(every), int(total), bool(final)

    def save(self, trainer: L.Trainer, pl_module) -> None:
        atomic_torch_save(self.clock.stamp(pl_module.resume_state()), self.path)

    def periodic(self, trainer: L.Trainer, pl_module) -> None:
        n = pl_module.steps_done
        due = self.every > 0 and n % self.every == 0
        if (due and (n < self.total or self.final)) or (self.final and n == self.total):
            self.save(trainer, pl_module)

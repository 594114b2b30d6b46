"""The periodic resume checkpoint shared by the synthesis families that keep their state in a plain dict (DM, the
frozen-backbone family): every ``every`` steps (0 = never) the module's ``resume_state()`` is written atomically.
A step that raises never reaches this hook, so the last good checkpoint is kept. On SIGTERM (:mod:`reta.utils.signals`)
the state after the last finished step is written whatever ``every`` is. Every checkpoint carries the synthesis
seconds spent so far (:class:`reta.synthesis.runtime.SynthesisClock`)."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from reta.synthesis.runtime import SynthesisClock
from reta.utils.io import atomic_torch_save
from reta.utils.signals import is_sigterm, note_saved


class PeriodicCheckpoint(L.Callback):
    """Save ``pl_module.resume_state()`` to ``path`` when ``pl_module.steps_done`` is a multiple of ``every``
    (``0`` = never) and, with ``final=True``, after the last of ``total`` steps; ``final=False`` skips the last step
    (a finished run's set is the artifact); ``clock`` stamps each checkpoint with the synthesis seconds so far."""

    def __init__(self, path: str | Path, every: int, total: int, final: bool, clock: SynthesisClock) -> None:
        self.path, self.every, self.total, self.final = Path(path), int(every), int(total), bool(final)
        self.clock = clock

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = pl_module.steps_done
        due = self.every > 0 and n % self.every == 0
        if (due and (n < self.total or self.final)) or (self.final and n == self.total):
            atomic_torch_save(self.clock.stamp(pl_module.resume_state()), self.path)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if is_sigterm(exception):
            atomic_torch_save(self.clock.stamp(pl_module.resume_state()), self.path)
            note_saved(self.path)

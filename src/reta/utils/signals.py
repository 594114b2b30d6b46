"""Preemption: SIGTERM — what SLURM sends on preemption and at the time limit — ends a run with a resume checkpoint
and exit status 143 (128 + 15, what a shell reports for a process ended by SIGTERM), never with status 0.

Lightning's signal connector (``lightning.pytorch.trainer.connectors.signal_connector``) catches SIGTERM during
``trainer.fit`` and raises :class:`~lightning.pytorch.utilities.exceptions.SIGTERMException` at the next batch
boundary, after the callbacks' ``on_train_batch_end``; it then calls every callback's ``on_exception``. The
synthesis checkpoint callbacks write their resume state there (:func:`is_sigterm`, :func:`note_saved`), and the
console scripts turn the exception — a bare ``SystemExit`` — into one line naming ``resume=true`` and exit 143
(:func:`interrupted_line`). Under SLURM with ``auto_requeue`` Lightning's own SLURM environment also handles the
requeue signal and requeues the job. A requeued SLURM job (``SLURM_RESTART_COUNT`` > 0, also what submitit's requeue on
preemption or time-out gives) that finds its run's checkpoints resumes them without ``resume=true``
(:func:`requeued`).

SIGUSR1 — what SLURM sends ahead of the time limit with ``sbatch --signal=USR1@90`` and Lightning's SLURM requeue
signal — asks for the same resume checkpoint but does not stop the run (:class:`CheckpointSignal`): the checkpoint is
written at the next step boundary and synthesis goes on, as Lightning's SLURM environment expects (it requeues the job
on that signal and lets it run until SIGTERM). A SIGTERM that follows ends the run with its own checkpoint and 143; a
step too long to finish between SIGTERM and SLURM's SIGKILL still leaves the SIGUSR1 checkpoint to resume from.
A handler already installed for SIGUSR1 (Lightning's requeue handler under SLURM auto-requeue) still runs.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from lightning.pytorch.utilities.exceptions import SIGTERMException

#: Exit status of a run ended by SIGTERM (128 + signal number 15).
EXIT_SIGTERM = 143
#: The signal that asks for a resume checkpoint and lets the run go on.
CHECKPOINT_SIGNAL = signal.SIGUSR1

_saved: list[Path] = []


def is_sigterm(exc: BaseException) -> bool:
    """Whether ``exc`` is Lightning's exception for a SIGTERM received during ``trainer.fit``."""
    return isinstance(exc, SIGTERMException)


def note_saved(path: str | Path) -> None:
    """Record the resume checkpoint written on the signal (named in :func:`interrupted_line`)."""
    _saved.append(Path(path))


def interrupted_line() -> str:
    """The one line a console script prints for a run ended by SIGTERM (forgets the checkpoints it names)."""
    if _saved:
        where = ", ".join(str(p) for p in dict.fromkeys(_saved))
        _saved.clear()
        return (f"interrupted by SIGTERM; resume checkpoint written to {where}; rerun the same command with "
                "resume=true to continue")
    return ("interrupted by SIGTERM before a resume checkpoint could be written; rerun the same command (with "
            "resume=true if the run's checkpoints/ exist)")


def requeued() -> int:
    """How often SLURM requeued this job (``SLURM_RESTART_COUNT``; 0 outside SLURM or on its first start)."""
    try:
        return max(0, int(os.environ.get("SLURM_RESTART_COUNT") or 0))
    except ValueError:
        return 0


class CheckpointSignal:
    """Watches :data:`CHECKPOINT_SIGNAL` during one ``trainer.fit``: :meth:`install` at the start of training (after
    Lightning registered its own handlers, which keep running), :meth:`take` at each step boundary, :meth:`restore`
    when training ends or fails. Outside the main thread (where Python cannot set handlers) it does nothing."""

    def __init__(self) -> None:
        self._requested = False
        self._previous = None
        self._installed = False

    def install(self) -> None:
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.getsignal(CHECKPOINT_SIGNAL)
        previous = self._previous

        def handler(signum, frame) -> None:
            self._requested = True
            if callable(previous):
                previous(signum, frame)

        signal.signal(CHECKPOINT_SIGNAL, handler)
        self._installed = True

    def take(self) -> bool:
        """Whether the signal arrived since the last call."""
        requested, self._requested = self._requested, False
        return requested

    def restore(self) -> None:
        if self._installed:
            signal.signal(CHECKPOINT_SIGNAL, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

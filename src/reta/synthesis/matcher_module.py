"""A matcher under Lightning: :class:`MatcherModule` drives a matcher (DM/IDM's
:class:`~reta.synthesis.dm.matcher.DistributionMatcher`, the process family's DC/DSA and MTT matchers)
one iteration per training step, with manual optimisation;
:class:`reta.synthesis.checkpoint.PeriodicCheckpoint` writes its resume state.

Why a LightningModule with manual optimisation (not Fabric): the BN family is a LightningModule run by a Trainer, so
the DM family gets the same Trainer (``trainer`` group: accelerator, devices, ``precision``), the same loggers
(``logger`` group, CSV/W&B/any Lightning logger), the same progress bar and the same callback mechanism; DM's step
(a fresh embedder per iteration, one SGD step per iteration — or, for IDM, one step per class — and the IDM queue's
own training) does not fit automatic optimisation, so the matcher's ``backward`` and ``optimizer_step`` are routed
through :meth:`~lightning.pytorch.LightningModule.manual_backward` and the wrapped optimiser, which is where the
precision plugin acts (autocast around the step for ``bf16-mixed``/``16-mixed``, loss scaling for ``16-mixed``).

Determinism: embedders are initialised from torch's global stream, so the step stream's DataLoader gets its own
generator (creating a DataLoader iterator otherwise draws a seed from the global stream); an uninterrupted run and a
resumed one therefore see the same global random numbers, and ``trainer.precision=32-true`` reproduces the plain loop
bit for bit.
"""

from __future__ import annotations

import logging

import lightning as L
import torch

from reta.synthesis.stream import StepStream

log = logging.getLogger(__name__)


class MatcherModule(L.LightningModule):
    """One matcher run (DM/IDM(+IID), and the process-matching family's DC/DSA/MTT): ``training_step`` = one matcher
    iteration; losses averaged over ``log_every`` iterations go to ``matcher.history`` (``meta.json``), to the logger
    (``<matcher.log_prefix>/<term>``, default ``dm``) and to the log."""

    def __init__(self, matcher) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.matcher = matcher
        self.images = matcher.images  # registered, so the trainer moves the pixels with the module
        self._window: dict[str, float] = {}
        self._n_window = 0
        #: dtype of the embedder's features in the last step (what the precision setting actually produced)
        self.step_dtype: torch.dtype | None = None

    @property
    def steps_done(self) -> int:
        return self.matcher.iteration

    def resume_state(self) -> dict:
        return self.matcher.state_dict()

    def configure_optimizers(self):
        return self.matcher.opt

    def train_dataloader(self):
        stream = StepStream(self.matcher.iteration, self.matcher.spec.iterations)
        return torch.utils.data.DataLoader(stream, batch_size=None, generator=torch.Generator())

    def on_train_start(self) -> None:
        opt = self.optimizers()
        self.matcher.backward = self.manual_backward
        self.matcher.optimizer_step = opt.step
        self.matcher.on_features = self._record_dtype

    def _record_dtype(self, feats: torch.Tensor) -> None:
        self.step_dtype = feats.dtype

    def training_step(self, batch, batch_idx):
        it = int(batch)
        if it != self.matcher.iteration:
            raise RuntimeError(f"iteration {it} arrived, expected {self.matcher.iteration}")
        terms = self.matcher.step()
        for k, v in terms.items():
            self._window[k] = self._window.get(k, 0.0) + v
        self._n_window += 1
        spec, done = self.matcher.spec, self.matcher.iteration
        if done % max(spec.log_every, 1) == 0 or done == spec.iterations:
            row = {"iteration": done, **{k: round(v / self._n_window, 6) for k, v in self._window.items()}}
            self.matcher.history.append(row)
            log.info(f"{spec.name} it {done}/{spec.iterations} "
                     + " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "iteration"))
            prefix = getattr(self.matcher, "log_prefix", "dm")
            self.log_dict({f"{prefix}/{k}": float(v) for k, v in row.items() if k != "iteration"},
                          on_step=True, on_epoch=False, prog_bar=True, batch_size=1)
            self._window, self._n_window = {}, 0

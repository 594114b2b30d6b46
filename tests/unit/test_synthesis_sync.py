"""The BN-matching synthesis step makes no host-device sync between logging intervals (CUDA only: torch's sync debug
mode raises on any synchronising call inside the steps that are neither logging steps nor stage/job ends)."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from test_synthesis_module import make_module

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (sync debug mode)")


class SyncGuard(L.Callback):
    """``torch.cuda.set_sync_debug_mode("error")`` around every step that may not read the device back."""

    def __init__(self) -> None:
        self.guarded = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        g = int(batch)
        t = g % module.schedule.total
        pos = module.schedule.position(t)
        quiet = g % module.log_every != 0 and not pos.last_in_stage and not pos.first_in_stage and t > 0
        if quiet:
            self.guarded += 1
            torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        torch.cuda.set_sync_debug_mode(0)


def test_synthesis_steps_do_not_sync():
    module = make_module(budgets=(6, 6))
    module.log_every = 100
    guard = SyncGuard()
    trainer = L.Trainer(accelerator="gpu", devices=1, max_epochs=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, callbacks=[guard])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(module)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert guard.guarded > 0 and module.next_step == module.total_steps

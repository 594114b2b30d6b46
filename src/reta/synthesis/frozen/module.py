"""The frozen-backbone synthesis loop as a LightningModule with manual optimisation, and its resume checkpoint.

One training batch = one optimisation step ``t`` of the images (the loader yields step indices), so Lightning's
precision plugin, loggers, progress bar and device placement behave as in the BN family. Per step:

``lgm``  a fresh linear head W ~ N(0, ``head_std``²), b = 0; a real batch of ``ipc · augs_per_batch · C`` images drawn
         uniformly from the training split (not class-balanced), one AugStandard view each, no graph; the synthetic set
         tiled ``augs_per_batch`` times with an independent view per copy; loss 1 − cos of the two head gradients
         (:func:`reta.synthesis.frozen.losses.lgm_loss`) [code: GeorgeCazenavette/linear-gradient-matching
         ``src/distillation/linear_gm.py``].
``sfm``  one AugStandard pass of the synthetic set, class means of φ, flows F_syn, loss 1 − cos against the cached
         target flows F* (:mod:`reta.synthesis.frozen.statistics`); no real image is touched (arXiv 2602.05391).

Then one Adam step on the image parameters; a pyramid gains its next level every ``extent_every`` steps with fresh
Adam moments. All randomness comes from one generator, so a seed fixes the set;
:class:`reta.synthesis.checkpoint.PeriodicCheckpoint` writes
``last.ckpt`` (parameters, Adam state, step, generator state, history) atomically every ``checkpoint_every`` steps and
:func:`load_checkpoint` restores it, after which the loader continues at the next step: a resumed run ends with the
images of an uninterrupted one. A step whose loss is not finite raises before any write, naming the loss.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from torch import nn

from reta.errors import CheckpointError, NonFiniteLossError
from reta.synthesis.frozen.augment import aug_standard
from reta.synthesis.frozen.losses import class_means, flows_from_means, lgm_loss, sfm_loss
from reta.synthesis.runtime import SynthesisClock

log = logging.getLogger(__name__)


class FrozenSynthesisModule(L.LightningModule):
    """State and step of one LGM/SFM run. ``images`` has ``decode()`` (pixels in [0, 1]) and ``extend(gen)``."""

    def __init__(self, spec, images: nn.Module, backbone: nn.Module, labels: torch.Tensor, num_classes: int, seed: int,
                 target_flows: torch.Tensor | None = None, train=None) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.spec, self.images, self.backbone = spec, images, backbone
        self.register_buffer("labels", labels.long())
        self.C = int(num_classes)
        self.aug = spec.aug
        self.gen = torch.Generator().manual_seed(int(seed) * 1000003 + 17)
        if target_flows is not None:
            self.register_buffer("target_flows", target_flows.to(torch.float32))
        self.train_set = train
        self.step_index = 0
        self.history: list[dict] = []
        self._window: list[float] = []
        self._pending_opt: dict | None = None
        self.fingerprint = ""

    # ---- losses of one step
    def sfm_step_loss(self, x: torch.Tensor) -> torch.Tensor:
        z = self.backbone(aug_standard(x, self.aug, self.gen))
        return sfm_loss(flows_from_means(class_means(z, self.labels, self.C)), self.target_flows, self.spec.variant)

    def lgm_step_loss(self, x: torch.Tensor) -> torch.Tensor:
        a, d = int(self.spec.augs_per_batch), self.backbone.dim
        n_real = len(self.labels) * a
        idx = torch.randint(0, len(self.train_set), (n_real,), generator=self.gen)
        real = self.train_set.gather(idx)
        real = (real.float() / 255.0 if real.dtype == torch.uint8 else real.float()).to(self.device)
        y_real = self.train_set.targets[idx].long().to(self.device)
        with torch.no_grad():
            z_real = self.backbone(aug_standard(real, self.aug, self.gen))
        z_syn = self.backbone(aug_standard(x.repeat(a, 1, 1, 1), self.aug, self.gen))
        w = (torch.randn(self.C, d, generator=self.gen) * self.spec.head_std).to(self.device)
        b = torch.zeros(self.C, device=self.device)
        return lgm_loss(z_real, y_real, z_syn, self.labels.repeat(a), w, b)

    # ---- Lightning hooks
    def configure_optimizers(self):
        return torch.optim.Adam(self.images.parameters(), lr=self.spec.lr)

    def on_train_start(self) -> None:
        if self._pending_opt is not None:
            self.optimizers().optimizer.load_state_dict(self._pending_opt)
            self._pending_opt = None

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        t = self.step_index
        if t > 0 and self.spec.extent_every > 0 and t % self.spec.extent_every == 0 and self.images.extend(self.gen):
            opt.optimizer.state.clear()  # Adam moments reset at each pyramid extension (as the reference)
        x = self.images.decode()
        loss = self.sfm_step_loss(x) if self.spec.loss == "sfm" else self.lgm_step_loss(x)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"{self.spec.loss} loss (1 - cos) became {loss.item()} at step {t}")
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        if hasattr(self.images, "clamp_"):
            self.images.clamp_()
        self.step_index = t + 1
        self._window.append(float(loss.detach()))
        if self.step_index % max(int(self.spec.log_every), 1) == 0 or self.step_index == self.spec.iterations:
            self.history.append({"step": self.step_index, "loss": sum(self._window) / len(self._window)})
            self._window = []
        self.log("frozen/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)

    # ---- resume (reta.synthesis.checkpoint.PeriodicCheckpoint)
    @property
    def steps_done(self) -> int:
        return self.step_index

    def resume_state(self) -> dict:
        return {"images": self.images.state_dict(), "optimizer": self.optimizers().optimizer.state_dict(),
                "step": self.step_index, "gen": self.gen.get_state(), "history": self.history,
                "window": self._window, "fingerprint": self.fingerprint}


def load_checkpoint(path: str | Path, module: FrozenSynthesisModule, clock: SynthesisClock) -> None:
    """Restore ``module`` and ``clock``'s seconds so far from ``path`` before ``trainer.fit`` (the Adam state is loaded
    when training starts)."""
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CheckpointError(f"resume: cannot read {path} ({type(err).__name__})") from err
    if st.get("fingerprint") != module.fingerprint:
        raise CheckpointError(f"resume: {path} was written by another configuration (method, ipc, seed, backbone or "
                              f"dataset differ); use a fresh paths.output_dir")
    module.images.load_state_dict(st["images"])
    module._pending_opt = st["optimizer"]
    module.step_index = int(st["step"])
    module.gen.set_state(st["gen"])
    module.history, module._window = list(st["history"]), list(st["window"])
    clock.restore(st, path)
    log.info("resumed frozen-backbone synthesis from %s at step %d", path, module.step_index)

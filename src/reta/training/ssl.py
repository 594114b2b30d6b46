"""A self-supervised backbone trained by reta without labels: SimCLR (Chen et al. 2020, arXiv 2002.05709).

The SSL parts come from the ``lightly`` package: :class:`lightly.loss.NTXentLoss` (NT-Xent, Eq. 1 of the SimCLR paper)
and :class:`lightly.models.modules.SimCLRProjectionHead` (the 2-layer MLP projection g). The two views are drawn by
reta's batched tensor augmentations (:mod:`reta.data.augment`: per-image RandomResizedCrop + flip, plus a per-image
brightness/contrast jitter) rather than lightly's per-image PIL transforms: they run on the whole uint8 batch at
once and draw every random number from one seeded generator, so the same seed gives the same backbone. Training runs
through a Lightning ``Trainer`` (``trainer`` config group: precision, devices, loggers, progress bar).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import lightning as L
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import nn

from reta.data.augment import normalize, random_resized_crop_flip
from reta.data.base import ImageDataset
from reta.models import features
from reta.training.common import build_logger, build_trainer, lr_lambda, seed_everything
from reta.training.teacher import train_loader
from reta.utils.config import output_dir, plain


@dataclass(frozen=True)
class SSLSpec:
    """SimCLR recipe (``backbone.ssl``); defaults sized for Fashion-MNIST on a CPU."""

    steps: int = 200
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-6
    temperature: float = 0.2
    proj_hidden: int = 512
    proj_out: int = 128
    rrc_scale_min: float = 0.2
    jitter: float = 0.4  # brightness and contrast factors drawn from U(1 − j, 1 + j), per image, p = 0.8


def jitter(x: torch.Tensor, strength: float, gen: torch.Generator, p: float = 0.8) -> torch.Tensor:
    """Per-image brightness × and contrast (around the image mean) factors in U(1 − s, 1 + s), applied with
    probability ``p`` (torchvision ColorJitter's brightness/contrast definitions, batched), clamped to [0, 1]."""
    b = x.shape[0]
    apply = (torch.rand(b, 1, 1, 1, generator=gen) < p).to(x.dtype)
    fb = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * strength
    fc = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * strength
    y = x * fb
    m = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - m) * fc + m
    return (apply * y + (1 - apply) * x).clamp(0, 1)


class SimCLRModule(L.LightningModule):
    """NT-Xent on two augmented views of each (unlabelled) training image; the backbone is ``net``'s trunk."""

    def __init__(self, net: nn.Module, dim: int, mean, std, spec: SSLSpec, seed: int) -> None:
        super().__init__()
        self.net = net
        self.head = SimCLRProjectionHead(dim, spec.proj_hidden, spec.proj_out)
        self.loss_fn = NTXentLoss(temperature=spec.temperature)
        self.mean, self.std, self.spec = list(mean), list(std), spec
        self.gen = torch.Generator().manual_seed(int(seed) + 7)
        self.losses: list[float] = []

    def _view(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spec
        v = random_resized_crop_flip(x, x.shape[-1], (s.rrc_scale_min, 1.0), self.gen)
        return normalize(jitter(v, s.jitter, self.gen), self.mean, self.std)

    def training_step(self, batch, batch_idx):
        x, _ = batch  # labels are never used
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        x = x.cpu()
        v1, v2 = self._view(x).to(self.device), self._view(x).to(self.device)
        loss = self.loss_fn(self.head(features(self.net, v1)), self.head(features(self.net, v2)))
        self.losses.append(float(loss.detach()))
        self.log("ssl/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.spec.lr, weight_decay=self.spec.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("cosine", self.spec.steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train_simclr(net: nn.Module, train: ImageDataset, mean, std, spec: SSLSpec, seed: int, cfg) -> dict:
    """Train ``net`` in place for ``spec.steps`` SimCLR steps on ``train`` (labels ignored); returns the record."""
    seed_everything(seed)
    with torch.no_grad():
        x0 = train.gather(torch.arange(2))
        x0 = x0.float() / 255.0 if x0.dtype == torch.uint8 else x0
        dim = int(features(net, normalize(x0, mean, std)).shape[1])
    module = SimCLRModule(net, dim, mean, std, spec, seed)
    loader = train_loader(train, spec.batch_size, seed)
    out = str(output_dir(cfg))
    trainer = build_trainer(plain(cfg.trainer), max_epochs=-1, logger=build_logger(plain(cfg.logger), out, "simclr"),
                            progress_bar=bool(cfg.get("progress_bar", False)), default_root_dir=out,
                            max_steps=spec.steps)
    start = time.perf_counter()
    trainer.fit(module, loader)
    net.eval()
    return {"steps": spec.steps, "seconds": round(time.perf_counter() - start, 2), "ssl": asdict(spec),
            "loss_first": module.losses[0], "loss_last": module.losses[-1]}

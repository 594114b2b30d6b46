"""Squeeze: train a teacher with a recipe, cache it, or load a given checkpoint (docs/methods.md §2).

The cache key hashes everything that changes the weights: dataset (name, resolution, normalisation), model
config, recipe and seed. A cache entry is a directory ``<cache_dir>/teachers/<dataset>_<model>_<key>/`` with
``model.pt`` (a plain state dict, loaded with ``weights_only=True``) and ``meta.json`` (recipe, test accuracy,
training time), written atomically so an interrupted squeeze leaves no entry behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reta.data.augment import normalize, random_crop_flip, random_resized_crop_flip
from reta.data.base import ImageDataset, TensorImageDataset
from reta.data.loading import train_loader_kwargs
from reta.data.registry import dataset_identity
from reta.errors import CheckpointError
from reta.models import build_model
from reta.models.weights import read_state_dict
from reta.training.common import lr_lambda, make_optimizer, restart_at_decay, test_accuracy
from reta.utils.config import config_digest
from reta.utils.io import atomic_directory


@dataclass(frozen=True)
class Recipe:
    """A teacher training recipe (docs/methods.md §2); every field is part of the cache key. The values live in
    ``conf/recipe/*.yaml`` only (:mod:`reta.utils.schema`)."""

    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    epochs: int
    schedule: str
    crop_pad: int
    rrc_scale_min: float  # > 0: RandomResizedCrop(scale=(min, 1)) instead of padded crop
    flip: bool


class TeacherModule(L.LightningModule):
    """Plain cross-entropy training of ``model`` on normalised, augmented real batches."""

    def __init__(self, model: nn.Module, mean, std, recipe: Recipe, steps_per_epoch: int, seed: int,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.mean, self.std = list(mean), list(std)
        self.recipe = recipe
        self.steps_per_epoch = steps_per_epoch
        self.gen = torch.Generator().manual_seed(seed + 1)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        r = self.recipe
        if r.rrc_scale_min > 0:
            return random_resized_crop_flip(x, x.shape[-1], (r.rrc_scale_min, 1.0), self.gen, flip=r.flip)
        return random_crop_flip(x, r.crop_pad, r.flip, self.gen)

    def training_step(self, batch, batch_idx):
        x, y = batch
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        x = normalize(self._augment(x), self.mean, self.std).contiguous(memory_format=self.memory_format)
        logits = self.model(x)
        loss = nn.functional.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        self.log_dict({"train/loss": loss, "train/acc": acc}, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def on_train_batch_start(self, batch, batch_idx) -> None:
        restart_at_decay(self, self.recipe.schedule, self.recipe.epochs * self.steps_per_epoch, self.steps_per_epoch)

    def configure_optimizers(self):
        r = self.recipe
        opt = make_optimizer(self.model.named_parameters(), r.optimizer, r.lr, r.weight_decay, r.momentum)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(r.schedule, r.epochs * self.steps_per_epoch,
                                                                     steps_per_epoch=self.steps_per_epoch))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def cache_key(dataset_cfg: Mapping, model_cfg: Mapping, recipe: Recipe, seed: int) -> str:
    """12-hex digest of the weight-determining configuration."""
    payload = {
        "dataset": dataset_identity(dataset_cfg),
        "model": model_cfg,
        "recipe": recipe.__dict__,
        "seed": int(seed),
    }
    return config_digest(payload)


def train_loader(dataset: ImageDataset, batch_size: int, seed: int, num_workers: int | None = None) -> DataLoader:
    """Shuffled loader; in-memory datasets yield uint8 batches (converted on the fly), others float. File datasets
    are decoded by ``data.num_workers`` persistent worker processes (``num_workers`` overrides; see
    :mod:`reta.data.loading`); the shuffle order depends on ``seed`` only."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(dataset, TensorImageDataset):
        ds, kw = TensorDataset(dataset.images, dataset.targets), train_loader_kwargs(0)
    else:
        ds, kw = dataset, train_loader_kwargs(num_workers)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, generator=g, drop_last=False, **kw)


def load_state_dict_file(path: str | Path) -> dict:
    """Read a checkpoint file weights-only (:func:`reta.models.weights.read_state_dict`); accepts a state dict,
    ``{'state_dict': …}`` or a Lightning checkpoint."""
    obj = read_state_dict(path, f"checkpoint {path}")
    if all(k.startswith("model.") for k in obj):  # a TeacherModule/StudentModule Lightning checkpoint
        obj = {k[len("model.") :]: v for k, v in obj.items()}
    return dict(obj)


def load_weights(model: nn.Module, state: Mapping, source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the first mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shape:
        detail = []
        if shape:
            k = shape[0]
            detail.append(f"shape of {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        if missing:
            detail.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise CheckpointError(f"checkpoint {source} does not fit the model: {'; '.join(detail)}")
    model.load_state_dict(state, strict=True)


def write_cache_entry(entry: Path, model: nn.Module, meta: dict, digest: Callable[[Path], str] | None = None) -> None:
    """Write ``model.pt`` + ``meta.json`` into a temporary sibling dir, then rename it to ``entry``: the rename is the
    commit, nothing is written into ``entry`` after it (a concurrent writer may swap the directory at any time).
    ``digest``: ``meta["checkpoint_sha256"] = digest(model.pt)``, recorded before the rename."""
    with atomic_directory(entry) as tmp:
        torch.save(model.state_dict(), tmp / "model.pt")
        if digest is not None:
            meta["checkpoint_sha256"] = digest(tmp / "model.pt")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def new_model(model_cfg: Mapping, dataset_cfg: Mapping) -> nn.Module:
    return build_model(model_cfg, dataset_cfg["num_classes"], dataset_cfg["channels"], dataset_cfg["image_size"])


def fit_teacher(
    model: nn.Module, train: ImageDataset, dataset_cfg: Mapping, recipe: Recipe, seed: int, trainer_factory,
    channels_last: bool = False,
) -> float:
    """Train ``model`` in place with ``recipe``; returns wall seconds. ``trainer_factory(max_epochs)`` → Trainer.
    ``channels_last``: weights and batches in NHWC memory format (faster convolutions on tensor cores)."""
    loader = train_loader(train, recipe.batch_size, seed)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    module = TeacherModule(model, dataset_cfg["mean"], dataset_cfg["std"], recipe, len(loader), seed, channels_last)
    start = time.perf_counter()
    trainer_factory(recipe.epochs).fit(module, loader)
    return time.perf_counter() - start


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def evaluate_teacher(model: nn.Module, test: ImageDataset, dataset_cfg: Mapping, device: str = "cpu") -> float:
    """Test accuracy on ``device`` (the model is moved there and back to the CPU)."""
    try:
        return test_accuracy(model.to(device), test, dataset_cfg["mean"], dataset_cfg["std"], device=device)
    finally:
        model.cpu()

"""Linear-probe evaluation on a frozen backbone, the golden (full-data) head W*, and classifier inheritance.

Linear probe [code: GeorgeCazenavette/linear-gradient-matching ``src/distillation/eval.py``]: a fresh linear head
(init N(0, 0.01²), bias 0) on frozen ``φ`` features of the training images, a flip + RandomResizedCrop view of every
image in every batch, batch ``min(batch_size, N)``, Adam (lr ``lr``, times ``batch / 256`` when ``lr_scale_batch``),
cosine to 0 over all steps, no weight decay; the accuracy of the **last** epoch on the test split is reported.

Golden head W* (the "classifier trained on the original dataset" of SFM + CI, arXiv 2602.05391): a linear probe on the
full training features, trained once per backbone and cached beside it. The epoch is chosen on a held-out split of the
training data (``holdout``), never on test; its test accuracy is the ``full`` row of ``metrics.json``. At CPU scale the
features are computed once without augmentation (pFRF's ``precompute.py`` augments every epoch, 100 epochs).

Classifier inheritance: a set distilled on backbone A is deployed on backbone B through a linear projector
P: φ_B → φ_A learnt on the distilled images only, minimising ‖P φ_B(v) − φ_A(v)‖² over augmented views v (Adam 1e-2,
batch 100, as XinbaoQiao/pFRF ``src/distillation/projector.py``); the prediction is W*_A · P · φ_B(x). On the same
backbone P is the identity and the inherited classifier is the golden head itself.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reta.data.augment import random_resized_crop_flip
from reta.data.base import ImageDataset
from reta.errors import RetaError
from reta.training.backbone import FrozenBackbone
from reta.training.common import build_trainer, lr_lambda, seed_everything
from reta.training.soft_labels import batch_loader
from reta.utils.cache_files import read_json, read_tensors
from reta.utils.config import config_digest
from reta.utils.io import atomic_torch_save, atomic_write_json
from reta.utils.schema import parse


@dataclass(frozen=True)
class ProbeSpec:
    """The ``protocol=linear_probe`` config group."""

    name: str = "linear_probe"
    epochs: int = 1000
    batch_size: int = 100
    lr: float = 1e-3
    lr_scale_batch: bool = True  # lr × batch / 256, as the reference
    head_init_std: float = 0.01
    rrc_scale_min: float = 0.08
    flip: bool = True
    inherit: bool = False  # also deploy the set's backbone's golden head through a projector (classifier inheritance)
    cross_backbone: bool = False  # allow a set distilled for another backbone (a new probe on this backbone)
    projector_steps: int = 1000
    projector_lr: float = 1e-2
    projector_batch: int = 100
    eval_split: str = "test"  # test | holdout: score on the golden head's held-out part of train (to choose settings)

    @classmethod
    def from_cfg(cls, cfg) -> ProbeSpec:
        spec = parse(cls, cfg, "protocol")
        if spec.eval_split not in ("test", "holdout"):
            raise RetaError(f"protocol.eval_split={spec.eval_split!r} unknown; valid: test, holdout")
        if spec.epochs <= 0 or spec.batch_size <= 0 or spec.lr <= 0:
            raise RetaError("protocol linear_probe: epochs, batch_size and lr must be > 0")
        return spec


@dataclass(frozen=True)
class GoldenSpec:
    """The golden head's recipe (``backbone.probe``)."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    holdout: float = 0.1  # fraction of the training split held out to choose the epoch
    seed: int = 0


def _view(x: torch.Tensor, spec: ProbeSpec, gen: torch.Generator) -> torch.Tensor:
    return random_resized_crop_flip(x, x.shape[-1], (spec.rrc_scale_min, 1.0), gen, flip=spec.flip)


class LinearProbeModule(L.LightningModule):
    """A linear head on a frozen backbone, trained on augmented views of a small image set (pixels in [0, 1])."""

    def __init__(self, backbone: FrozenBackbone, num_classes: int, spec: ProbeSpec, steps: int, batch: int,
                 seed: int) -> None:
        super().__init__()
        self.backbone, self.spec, self.steps, self.batch = backbone, spec, steps, batch
        self.head = nn.Linear(backbone.dim, num_classes)
        nn.init.normal_(self.head.weight, std=spec.head_init_std)
        nn.init.zeros_(self.head.bias)
        self.gen = torch.Generator().manual_seed(int(seed) + 3)

    def training_step(self, batch, batch_idx):
        x, y = batch
        with torch.no_grad():
            z = self.backbone(_view(x.cpu(), self.spec, self.gen).to(self.device))
        loss = F.cross_entropy(self.head(z), y)
        self.log("probe/loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        lr = self.spec.lr * (self.batch / 256 if self.spec.lr_scale_batch else 1.0)
        opt = torch.optim.Adam(self.head.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("cosine", self.steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


_TEST_FEATURES: dict[tuple[str, int], torch.Tensor] = {}


def eval_features(backbone: FrozenBackbone, test: ImageDataset) -> torch.Tensor:
    """φ of every test image (no augmentation), computed once per backbone and process."""
    k = (backbone.key, len(test))
    if k not in _TEST_FEATURES:
        _TEST_FEATURES[k] = backbone.embed(test.gather(torch.arange(len(test))))
    return _TEST_FEATURES[k]


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float((logits.argmax(1) == targets).float().mean())


def train_probe(backbone: FrozenBackbone, images: torch.Tensor, labels: torch.Tensor, num_classes: int, spec: ProbeSpec,
                seed: int, trainer_cfg: dict) -> nn.Linear:
    """Fit a fresh linear head on ``images`` (pixels in [0, 1]) under ``spec``; returns the head (CPU)."""
    seed_everything(seed)
    loader = batch_loader(images.float(), labels.long(), spec.batch_size, seed)
    module = LinearProbeModule(backbone, num_classes, spec, spec.epochs * len(loader), loader.batch_size, seed)
    trainer = build_trainer(trainer_cfg, spec.epochs, False, False, ".", enable_checkpointing=False)
    trainer.fit(module, loader)
    return module.head.cpu().eval()


def probe_accuracy(backbone: FrozenBackbone, images: torch.Tensor, labels: torch.Tensor, test: ImageDataset,
                   num_classes: int, spec: ProbeSpec, seed: int, trainer_cfg: dict) -> dict:
    """Train a probe and return ``{acc_last, acc_best, seconds}`` (test accuracy after the last epoch)."""
    start = time.perf_counter()
    head = train_probe(backbone, images, labels, num_classes, spec, seed, trainer_cfg)
    with torch.no_grad():
        acc = accuracy(head(eval_features(backbone, test)), test.targets)
    return {"acc_last": acc, "acc_best": acc, "seconds": time.perf_counter() - start}


# --------------------------------------------------------------------------------------------- golden head


class _HeadModule(L.LightningModule):
    """Linear head on precomputed features; keeps the weights of the epoch with the best held-out accuracy."""

    def __init__(self, dim: int, num_classes: int, spec: GoldenSpec, steps: int) -> None:
        super().__init__()
        self.head = nn.Linear(dim, num_classes)
        self.spec, self.steps = spec, steps
        self.best = (-1.0, 0, None)
        self.val_history: list[float] = []

    def training_step(self, batch, batch_idx):
        z, y = batch
        return F.cross_entropy(self.head(z), y)

    def validation_step(self, batch, batch_idx):
        z, y = batch
        self.val_correct = getattr(self, "val_correct", 0) + int((self.head(z).argmax(1) == y).sum())
        self.val_n = getattr(self, "val_n", 0) + len(y)

    def on_validation_epoch_end(self):
        acc = self.val_correct / max(self.val_n, 1)
        self.val_correct, self.val_n = 0, 0
        self.val_history.append(acc)
        if acc > self.best[0]:
            self.best = (acc, self.current_epoch + 1,
                         {k: v.detach().clone() for k, v in self.head.state_dict().items()})

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.head.parameters(), lr=self.spec.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("cosine", self.steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Subset(ImageDataset):
    """Rows ``indices`` of ``base`` as a dataset (the held-out split used to choose settings)."""

    def __init__(self, base: ImageDataset, indices: torch.Tensor) -> None:
        self.base, self.indices = base, indices.long()
        self.targets = base.targets[self.indices]
        self.class_names, self.num_classes = base.class_names, base.num_classes

    def load(self, index: int) -> torch.Tensor:
        return self.base.load(int(self.indices[index]))

    def gather(self, indices) -> torch.Tensor:
        return self.base.gather(self.indices[torch.as_tensor(indices, dtype=torch.long).reshape(-1)])


def holdout_split(train: ImageDataset, spec: GoldenSpec) -> tuple[Subset, Subset]:
    """(fit, held-out) parts of ``train``: a seeded permutation, the first ``holdout`` fraction held out."""
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(spec.seed))
    n_val = int(round(spec.holdout * len(train)))
    if n_val <= 0 or n_val >= len(train):
        raise RetaError(f"backbone.probe.holdout={spec.holdout} leaves no training or held-out images")
    return Subset(train, perm[n_val:]), Subset(train, perm[:n_val])


def golden_key(spec: GoldenSpec, n_train: int) -> str:
    return config_digest({**asdict(spec), "n": n_train})


def golden_head(backbone: FrozenBackbone, train: ImageDataset, test: ImageDataset, num_classes: int, spec: GoldenSpec,
                trainer_cfg: dict) -> tuple[nn.Linear, dict]:
    """W* of ``backbone`` and its record (held-out accuracy, chosen epoch, test accuracy): cached in the backbone's
    entry as ``golden_<key>.pt`` / ``.json``; trained on first use."""
    key = golden_key(spec, len(train))
    pt, js = backbone.entry / f"golden_{key}.pt", backbone.entry / f"golden_{key}.json"
    head = nn.Linear(backbone.dim, num_classes)
    if pt.is_file() and js.is_file():
        own = head.state_dict()
        head.load_state_dict(read_tensors(pt, lambda o: isinstance(o, dict) and set(o) == set(own) and all(
            isinstance(v, torch.Tensor) and v.shape == own[k].shape for k, v in o.items())))
        return head.eval(), {**read_json(js), "from_cache": True}
    start = time.perf_counter()
    z = backbone.embed(train.gather(torch.arange(len(train))))
    y = train.targets.long()
    fit_part, val_part = holdout_split(train, spec)
    val, fit = val_part.indices, fit_part.indices
    seed_everything(spec.seed)
    gl = torch.Generator().manual_seed(spec.seed)
    loader = DataLoader(TensorDataset(z[fit], y[fit]), batch_size=spec.batch_size, shuffle=True, generator=gl)
    vloader = DataLoader(TensorDataset(z[val], y[val]), batch_size=4096)
    module = _HeadModule(backbone.dim, num_classes, spec, spec.epochs * len(loader))
    trainer = build_trainer(trainer_cfg, spec.epochs, False, False, ".", enable_checkpointing=False)
    trainer.fit(module, loader, vloader)
    val_acc, epoch, state = module.best
    head.load_state_dict(state)
    head.eval()
    with torch.no_grad():
        test_acc = accuracy(head(eval_features(backbone, test)), test.targets)
    record = {"backbone": backbone.meta["name"], "backbone_key": backbone.key, "spec": asdict(spec), "epoch": epoch,
              "holdout_acc": val_acc, "holdout_history": module.val_history, "test_acc": test_acc,
              "seconds": round(time.perf_counter() - start, 2)}
    backbone.entry.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(head.state_dict(), pt)
    atomic_write_json(js, record)
    return head, {**record, "from_cache": False}


# --------------------------------------------------------------------------------------------- inheritance


class _ProjectorModule(L.LightningModule):
    def __init__(self, a: FrozenBackbone, b: FrozenBackbone, spec: ProbeSpec, seed: int) -> None:
        super().__init__()
        self.a, self.b, self.spec = a, b, spec
        self.proj = nn.Linear(b.dim, a.dim)
        self.gen = torch.Generator().manual_seed(int(seed) + 5)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        v = _view(x.cpu(), self.spec, self.gen).to(self.device)  # one view, seen by both backbones
        with torch.no_grad():
            za, zb = self.a(v), self.b(v)
        return F.mse_loss(self.proj(zb), za)

    def configure_optimizers(self):
        return torch.optim.Adam(self.proj.parameters(), lr=self.spec.projector_lr)


def learn_projector(a: FrozenBackbone, b: FrozenBackbone, images: torch.Tensor, spec: ProbeSpec, seed: int,
                    trainer_cfg: dict, force: bool = False) -> nn.Module:
    """P: φ_B → φ_A on ``images`` only; the identity when A and B are the same backbone (unless ``force``)."""
    if a.key == b.key and not force:
        return nn.Identity()
    seed_everything(seed)
    g = torch.Generator().manual_seed(int(seed))
    loader = DataLoader(TensorDataset(images.float()), batch_size=min(spec.projector_batch, len(images)), shuffle=True,
                        generator=g)
    module = _ProjectorModule(a, b, spec, seed)
    trainer = build_trainer(trainer_cfg, -1, False, False, ".", enable_checkpointing=False,
                            max_steps=spec.projector_steps)
    trainer.fit(module, loader)
    return module.proj.cpu().eval()


def inherited_accuracy(a: FrozenBackbone, golden_a: nn.Linear, b: FrozenBackbone, images: torch.Tensor,
                       test: ImageDataset, spec: ProbeSpec, seed: int, trainer_cfg: dict) -> dict:
    """Accuracy of W*_A · P · φ_B on the test split, P learnt on ``images``."""
    start = time.perf_counter()
    proj = learn_projector(a, b, images, spec, seed, trainer_cfg)
    with torch.no_grad():
        acc = accuracy(golden_a(proj(eval_features(b, test))), test.targets)
    return {"acc_last": acc, "acc_best": acc, "seconds": time.perf_counter() - start}

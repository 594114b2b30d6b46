"""Student evaluation: one fresh network trained on a small image set under a fixed protocol.

Protocols (docs/methods.md §5):
- ``kd`` — FKD/SRe2L/FADRM soft-label protocol: per-sample RandomResizedCrop + flip, CutMix on the batch, the frozen
  teacher labels the *mixed* view online, loss KL(softmax(t/T) ‖ softmax(s/T)) with ``batchmean`` and no T² factor
  [code: Jiacheng8/FADRM `validate/train_fkd.py`], AdamW with decay only on >1-d weights, cosine with η.
  Soft labels come ``online`` (the teacher labels every view in the step, default) or ``stored`` (FKD-style
  per-epoch views + logits written beforehand by :func:`reta.training.soft_labels.relabel` and replayed through a
  batch-level dataset); both consume the same view stream, so a seeded run gives the same student either way.
  Options for the decoupled baselines: ``shuffle_patches`` (RDED's per-sample patch shuffle before the crop,
  docs/methods.md §12.2) and ``ema_decay`` (EDC's EMA student is the one tested, §13.2). ``micro_batches`` k is the
  papers' gradient accumulation (FADRM/CV-DD ``--gradient-accumulation-steps 2``): each mixed, labelled batch goes
  through the student in k slices of batch_size / k, each slice's loss divided by k, one optimiser step per batch
  [code: Jiacheng8/FADRM `validate/train_fkd.py` `train`].
- ``hard`` — DC/DM protocol: CE on hard labels, SGD, lr ×0.1 at half, DSA on every batch
  [code: VICO-UoE/DatasetCondensation `utils.py` `evaluate_synset`].
- ``dc`` — the same loop at the published DC/DSA/DM evaluation settings (``conf/protocol/dc.yaml``: ConvNet-3 width
  128 with the first convolution padded by 3 on 28-px inputs, 1000 epochs with DSA, tested once after the last
  epoch; ``protocol=dc_noaug`` is DC's own 300-epoch evaluation without augmentation).
Test accuracy is measured every ``eval_every`` epochs and at the last epoch; the last value is the headline and
the maximum is reported only as a secondary figure — nothing is selected on the test set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from reta.data.augment import normalize
from reta.data.base import ImageDataset
from reta.errors import RetaError
from reta.training.committee import check_priors
from reta.training.common import OPTIMIZERS, lr_lambda, make_optimizer, restart_at_decay, test_accuracy
from reta.training.soft_labels import (
    StoredBatch,
    apply_view,
    batch_loader,
    label_teacher,
    sample_view,
    view_generator,
)
from reta.utils.schema import parse

LABELS = ("teacher", "hard")
LR_SOURCES = ("protocol", "set")
SOFT_LABELS = ("online", "stored")


@dataclass(frozen=True)
class CommitteeSpec:
    """``protocol.committee``: a committee of teachers labels the views instead of the run's teacher (CV-DD's
    batch-specific soft labels with ``teacher_mode: train``; :mod:`reta.training.committee`)."""

    teachers: list  # model config names or {name, kwargs[, label]} maps, as method.teachers
    priors: Any  # teacher_acc | [acc %, …] in teachers order
    temperature: float  # τ of softmax(prior / τ) (10 in CV-DD's relabelling)
    split: int | None  # images per teacher forward (BN statistics of each chunk in train mode); null = whole batch


@dataclass(frozen=True)
class Protocol:
    """Everything that defines how a student is trained (the ``protocol`` config group)."""

    name: str
    labels: str  # teacher (KD on the teacher's soft labels) | hard (cross-entropy on the set's labels)
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    decay_only_weights: bool
    batch_size: int
    epochs: int
    schedule: str
    cosine_eta: float
    temperature: float
    rrc_scale_min: float
    crop_pad: int
    flip: bool
    cutmix: bool
    dsa: bool
    teacher_mode: str
    eval_every: int
    soft_labels: str
    shuffle_patches: int
    ema_decay: float
    micro_batches: int  # k > 1: the student sees each batch in k micro-batches (BN per micro-batch), one step a batch
    lr_source: str  # protocol: ``lr`` for every set | set: a distilled set's students use the lr it records (MTT's α)
    committee: CommitteeSpec | None  # null: the run's teacher labels; else the committee (CV-DD BSSL)

    @classmethod
    def from_cfg(cls, cfg: Mapping) -> Protocol:
        p = parse(cls, cfg, "protocol")
        if p.labels not in LABELS:
            raise RetaError(f"protocol.labels={p.labels!r} unknown; valid: {', '.join(LABELS)}")
        if p.epochs <= 0 or p.batch_size <= 0:
            raise RetaError(f"protocol {p.name}: epochs and batch_size must be > 0")
        if p.optimizer not in OPTIMIZERS:
            raise RetaError(f"protocol.optimizer={p.optimizer!r} unknown; valid: {', '.join(OPTIMIZERS)}")
        if not p.lr > 0:
            raise RetaError(f"protocol {p.name}: lr must be > 0, got {p.lr!r}")
        if p.lr_source not in LR_SOURCES:
            raise RetaError(f"protocol.lr_source={p.lr_source!r} unknown; valid: {', '.join(LR_SOURCES)}")
        if p.teacher_mode not in ("eval", "train"):
            raise RetaError(f"protocol teacher_mode must be eval or train, got {p.teacher_mode!r}")
        if p.soft_labels not in SOFT_LABELS or (p.soft_labels == "stored" and (p.labels != "teacher" or p.dsa)):
            raise RetaError(
                f"protocol soft_labels must be online or stored (stored: kd without DSA), got {p.soft_labels!r}"
            )
        if isinstance(p.shuffle_patches, bool) or not isinstance(p.shuffle_patches, int) or p.shuffle_patches < 1:
            raise RetaError(f"protocol shuffle_patches must be an integer >= 1 (1 = off), got {p.shuffle_patches!r}")
        if p.shuffle_patches > 1 and p.soft_labels == "stored":
            raise RetaError("protocol shuffle_patches > 1 needs soft_labels=online (stored views do not record it)")
        k = p.micro_batches
        if k < 1 or p.batch_size % k:
            raise RetaError(f"protocol.micro_batches must be an integer >= 1 that divides batch_size={p.batch_size}, "
                            f"got {k!r}")
        if not 0 <= float(p.ema_decay) < 1:
            raise RetaError(f"protocol ema_decay must be in [0, 1) (0 = off), got {p.ema_decay!r}")
        if p.committee is not None:
            check_committee_spec(p.committee, p.labels)
        return p


def check_committee_spec(c: CommitteeSpec, labels: str) -> None:
    """``protocol.committee`` values (no data needed; the teacher names are checked against the ``model`` group by
    :func:`reta.training.committee.committee_specs`)."""
    if labels != "teacher":
        raise RetaError(f"protocol.committee labels soft-label students; it needs labels=teacher, got {labels!r}")
    if not isinstance(c.teachers, list) or not c.teachers:
        raise RetaError(f"protocol.committee.teachers must be a non-empty list of models, got {c.teachers!r}")
    check_priors(c.priors, "protocol.committee")
    if not isinstance(c.priors, str) and len(c.priors) != len(c.teachers):
        raise RetaError(f"protocol.committee: {len(c.priors)} priors for {len(c.teachers)} teachers")
    if not float(c.temperature) > 0:
        raise RetaError(f"protocol.committee.temperature must be > 0, got {c.temperature}")
    if c.split is not None and c.split < 1:
        raise RetaError(f"protocol.committee.split must be a positive number of images or null, got {c.split}")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)), batch mean, no T² factor (docs/methods.md §5.1)."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1), reduction="batchmean",
        log_target=True,
    )


class StudentModule(L.LightningModule):
    """Trains ``model`` on pixel-space images under ``protocol``; tracks test accuracy without selecting on it."""

    def __init__(
        self,
        model: nn.Module,
        protocol: Protocol,
        mean,
        std,
        steps_per_epoch: int,
        seed: int,
        test_set: ImageDataset | None = None,
        teacher: nn.Module | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if protocol.labels == "teacher" and teacher is None:
            raise RetaError(f"protocol {protocol.name} (labels: teacher) needs a teacher")
        self.model = model
        self.p = protocol
        self.mean, self.std = list(mean), list(std)
        self.steps_per_epoch = steps_per_epoch
        self.test_set = test_set
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
        # the module that labels views: the frozen teacher (eval) or a private train-mode copy (BSSL)
        self.labeller = label_teacher(teacher, protocol.teacher_mode) if teacher is not None else None
        self.gen = view_generator(seed)
        self.dsa = None
        if protocol.dsa:
            from reta.data.dsa import DSA, DSAParams

            self.dsa = DSA(DSAParams())
        self.history: list[tuple[int, float]] = []
        # EDC's EMA student (docs/methods.md §13.2): parameters and BN buffers averaged every step, tested instead
        self.ema = None
        if float(protocol.ema_decay) > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(protocol.ema_decay)),
                                     use_buffers=True)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def _view(self, x: torch.Tensor, view=None) -> torch.Tensor:
        """Normalised training view: the given (stored) view or a fresh one from the student's stream; then DSA."""
        if view is None:
            view = sample_view(self.p, x.shape[0], x.shape[-2], x.shape[-1], self.gen)
        x = normalize(apply_view(x, view), self.mean, self.std)
        if self.dsa is not None:
            x = self.dsa(x, self.gen)
        return x.contiguous(memory_format=self.memory_format)

    def training_step(self, batch, batch_idx):
        if isinstance(batch, StoredBatch):  # stored soft labels: replay the view, use the stored logits
            x, y = self._view(batch.images, batch.view), batch.labels
            t_logits = batch.logits
        else:
            x, y = batch
            x = self._view(x)
            t_logits = None
            if self.p.labels == "teacher":
                self.labeller.train(self.p.teacher_mode == "train")  # fit() puts every submodule in train mode
                with torch.no_grad():
                    t_logits = self.labeller(x)
        loss = self._loss(x, y, t_logits)
        if not torch.isfinite(loss):
            raise RetaError(f"student loss ({self.p.name}) became {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def _loss(self, x: torch.Tensor, y: torch.Tensor, t_logits: torch.Tensor | None) -> torch.Tensor:
        """The batch loss; with ``micro_batches`` k > 1 the sum over slices of batch_size / k images of each slice's
        loss / k (the student's BN normalises each slice with its own statistics; a short last batch has fewer
        slices, each still divided by k, as the reference's accumulation does)."""
        k = self.p.micro_batches
        size = x.shape[0] if k == 1 else self.p.batch_size // k
        parts = []
        for i in range(0, x.shape[0], size):
            logits = self.model(x[i:i + size])
            if self.p.labels == "teacher":
                parts.append(kd_loss(logits, t_logits[i:i + size].to(logits), self.p.temperature) / k)
            else:
                parts.append(F.cross_entropy(logits, y[i:i + size]) / k)
        return torch.stack(parts).sum()

    def on_train_epoch_end(self) -> None:
        e = self.current_epoch + 1
        if self.test_set is not None and (e % self.p.eval_every == 0 or e == self.trainer.max_epochs):
            tested = self.model if self.ema is None else self.ema.module
            acc = test_accuracy(tested, self.test_set, self.mean, self.std, device=self.device)
            self.history.append((e, acc))
            self.log("test/acc", acc, prog_bar=True)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        restart_at_decay(self, self.p.schedule, self.p.epochs * self.steps_per_epoch, self.steps_per_epoch)

    def configure_optimizers(self):
        p = self.p
        opt = make_optimizer(
            self.model.named_parameters(), p.optimizer, p.lr, p.weight_decay, p.momentum, p.decay_only_weights
        )
        total = p.epochs * self.steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(p.schedule, total, p.cosine_eta, self.steps_per_epoch))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def student_loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> DataLoader:
    return batch_loader(images, labels, batch_size, seed)

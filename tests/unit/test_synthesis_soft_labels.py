"""Soft-label relabelling (docs/methods.md §5.1): stored FKD-style labels and the online teacher give identical
students."""

from __future__ import annotations

import dataclasses

import lightning as L
import numpy as np
import pytest
import torch

from reta.data.augment import cutmix, random_resized_crop_flip
from reta.errors import RetaError
from reta.models import build_model
from reta.training.soft_labels import (
    apply_view,
    batch_loader,
    relabel,
    sample_view,
    stored_loader,
    view_generator,
)
from reta.training.student import Protocol, StudentModule

from helpers import fit_student_state

MEAN, STD = [0.3], [0.3]
KD = dict(name="kd", labels="teacher", optimizer="adamw", lr=1e-2, momentum=0.9, weight_decay=0.01,
          decay_only_weights=True, batch_size=4,
          epochs=3, schedule="cosine", cosine_eta=2.0, temperature=4.0, rrc_scale_min=0.5, crop_pad=0, flip=True,
          cutmix=True, dsa=False, teacher_mode="eval", eval_every=10, soft_labels="online", shuffle_patches=1,
          ema_decay=0.0, micro_batches=1, lr_source="protocol", committee=None)


def tiny_net(seed: int):
    torch.manual_seed(seed)
    return build_model({"name": "convnet_tiny", "kwargs": {}}, 4, 1, 16)


def data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(10, 1, 16, 16, generator=g), torch.arange(10) % 4


def train(protocol, loader, teacher):
    L.seed_everything(7, verbose=False)
    module = StudentModule(tiny_net(3), protocol, MEAN, STD, len(loader), seed=5, teacher=teacher)
    return fit_student_state(module, loader, protocol.epochs)


@pytest.mark.parametrize("teacher_mode", ["eval", "train"])
def test_stored_and_online_soft_labels_give_identical_students(tmp_path, teacher_mode):
    images, labels = data()
    p = Protocol.from_cfg({**KD, "teacher_mode": teacher_mode})
    teacher = tiny_net(1).eval()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    online = train(p, batch_loader(images, labels, p.batch_size, 5), teacher)
    store = relabel(images, labels, p, teacher, MEAN, STD, seed=5, out_dir=tmp_path / "fkd")
    stored = train(
        dataclasses.replace(p, soft_labels="stored"), stored_loader(store, images, labels, p, teacher, 5), teacher
    )
    assert online.keys() == stored.keys()
    assert all(torch.equal(online[k], stored[k]) for k in online)
    # the shared teacher is never modified, even when labelling in train mode (private copy)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    # one directory per epoch, one memory-mappable array per field
    epochs = sorted(p.name for p in store.iterdir() if p.is_dir())
    assert epochs == ["epoch_0000", "epoch_0001", "epoch_0002"]
    ids = np.load(store / "epoch_0001" / "ids.npy", mmap_mode="r")
    assert sorted(ids.tolist()) == list(range(10)) and np.load(store / "epoch_0001" / "logits.npy").shape == (10, 4)


def test_store_mismatch_is_a_hard_error(tmp_path):
    images, labels = data()
    p = Protocol.from_cfg(KD)
    teacher = tiny_net(1).eval()
    store = relabel(images, labels, p, teacher, MEAN, STD, seed=5, out_dir=tmp_path / "fkd")
    with pytest.raises(RetaError, match="batch_size is 4 there, 8 here"):
        stored_loader(store, images, labels, dataclasses.replace(p, batch_size=8), teacher, 5)
    with pytest.raises(RetaError, match="seed is 5 there, 6 here"):
        stored_loader(store, images, labels, p, teacher, 6)
    with pytest.raises(RetaError, match="images is"):
        stored_loader(store, images[:8], labels[:8], p, teacher, 5)
    with pytest.raises(RetaError, match="teacher is"):
        stored_loader(store, images, labels, p, tiny_net(2), 5)
    with pytest.raises(RetaError, match="stored"):
        Protocol.from_cfg({**KD, "name": "hard", "labels": "hard", "soft_labels": "stored"})


def test_view_sampling_reproduces_the_augment_stream():
    """The split sample/apply view equals reta.data.augment's RRC + flip + CutMix drawn from the same stream."""
    images, _ = data()
    p = Protocol.from_cfg(KD)
    g1, g2 = view_generator(5), view_generator(5)
    v = sample_view(p, 10, 16, 16, g1)
    ref = random_resized_crop_flip(images, 16, (0.5, 1.0), g2, flip=True)
    ref, perm, _ = cutmix(ref, g2)
    torch.testing.assert_close(apply_view(images, v), ref)
    assert torch.equal(v.perm, perm) and torch.equal(g1.get_state(), g2.get_state())

"""KD soft labels: the per-batch view (crop, flip, CutMix) as explicit parameters, and FKD-style stored labels.

Sources: docs/methods.md §5.1 [code: Jiacheng8/FADRM `relabel/relabel.py`, `relabel/utils_fkd.py`; VILA-Lab/SRe2L
`SRe2L/relabel/generate_soft_label.py`]: per epoch and batch the reference stores sample ids, crop boxes, flip flags,
the CutMix permutation and box, and the teacher's logits of the mixed view; the trainer replays them.

reta's design [recon, docs/methods.md §5.1 "reta design"]:

* a view is *sampled* (:func:`sample_view`, from the student's generator, in the exact draw order of
  ``reta.data.augment``'s RandomResizedCrop/RandomCrop + flip + CutMix) and *applied* (:func:`apply_view`) as two
  steps, so the online student and the relabel pass share one code path;
* **online** (default): the student samples the view and the frozen teacher labels it in the training step;
* **stored**: :func:`relabel` replays the student's batch order (the same seeded loader) and view stream, and
  writes one directory per epoch with one ``.npy`` array per field (ids, offsets, boxes, flips, permutation, CutMix
  box, logits), memory-mapped on read. :class:`StoredBatches` is a *batch-level* dataset — item ``b`` of epoch
  ``e`` is one stored batch — loaded with ``batch_size=None`` by an :class:`EpochBatchSampler` whose ``set_epoch``
  Lightning calls every epoch. No torch internals are patched. The store's ``meta.json`` (batch size, seed,
  epochs, view settings, image-set hash, teacher digest and mode) is checked before training: any mismatch is a
  hard :class:`~reta.errors.RetaError`. With float32 logits both modes give the same student, update for update.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from reta.data.augment import _apply_boxes, normalize, rrc_boxes
from reta.data.loading import options
from reta.errors import RetaError
from reta.utils.io import atomic_directory, atomic_write_json

STORE_FORMAT = 1
FIELDS = ("ids", "offsets", "boxes", "flip", "perm", "cut", "logits")


@dataclass
class ViewParams:
    """One batch's view: boxes ``(x0, y0, w, h)`` float64 ``[B, 4]``, flips bool ``[B]``, resampling ``mode``
    (``bilinear`` RRC, ``nearest`` padded crop, ``none``), CutMix permutation ``[B]`` and box ``(x0, x1, y0, y1)``."""

    boxes: torch.Tensor | None
    flip: torch.Tensor | None
    mode: str
    perm: torch.Tensor | None
    cut: tuple[int, int, int, int] | None
    shuffle: torch.Tensor | None = None  # [B, 2, f]: column-strip and row-strip permutations (RDED ShufflePatches)


def sample_view(p, b: int, h: int, w: int, gen: torch.Generator) -> ViewParams:
    """Draw the view of a ``b``-image batch for protocol ``p`` (same draws, same order as ``reta.data.augment``)."""
    boxes = flip = None
    mode = "none"
    if p.rrc_scale_min > 0:
        boxes = rrc_boxes(b, h, w, (p.rrc_scale_min, 1.0), (3 / 4, 4 / 3), gen)
        flip = (torch.rand(b, generator=gen) < 0.5) if p.flip else torch.zeros(b, dtype=torch.bool)
        mode = "bilinear"
    elif p.crop_pad > 0 or p.flip:
        pad = p.crop_pad
        dx = (torch.randint(-pad, pad + 1, (b,), generator=gen).double() if pad > 0
              else torch.zeros(b, dtype=torch.float64))
        dy = (torch.randint(-pad, pad + 1, (b,), generator=gen).double() if pad > 0
              else torch.zeros(b, dtype=torch.float64))
        flip = (torch.rand(b, generator=gen) < 0.5) if p.flip else torch.zeros(b, dtype=torch.bool)
        full = torch.full((b,), float(w), dtype=torch.float64), torch.full((b,), float(h), dtype=torch.float64)
        boxes, mode = torch.stack([dx, dy, *full], 1), "nearest"
    perm = cut = None
    if p.cutmix:  # CutMix, λ ~ Beta(1, 1), box side √(1 − λ), centre uniform (Yun et al. 2019)
        perm = torch.randperm(b, generator=gen)
        lam = float(torch.rand(1, generator=gen, dtype=torch.float64))
        cw, ch = int(w * math.sqrt(1.0 - lam)), int(h * math.sqrt(1.0 - lam))
        cx = int(torch.randint(0, w, (1,), generator=gen))
        cy = int(torch.randint(0, h, (1,), generator=gen))
        cut = (max(cx - cw // 2, 0), min(cx + cw // 2, w), max(cy - ch // 2, 0), min(cy + ch // 2, h))
    shuffle = None
    f = int(getattr(p, "shuffle_patches", 1))
    if f > 1:  # drawn last, so the other draws are the same with the option off
        shuffle = torch.stack([torch.stack([torch.randperm(f, generator=gen) for _ in range(2)]) for _ in range(b)])
    return ViewParams(boxes, flip, mode, perm, cut, shuffle)


def shuffle_patches(x: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """RDED's ``ShufflePatches(f)`` [code: LINs-lab/RDED `validation/utils.py`]: image ``b`` cut into ``f`` vertical
    strips put in the order ``perms[b, 0]``, then into ``f`` horizontal strips put in the order ``perms[b, 1]``
    (strip width ``W // f``; a remainder stays in place at the end)."""
    f = perms.shape[-1]
    out = x.clone()
    for axis, dim in ((0, 3), (1, 2)):
        step = x.shape[dim] // f
        src = out.clone()
        for b in range(x.shape[0]):
            order = perms[b, axis].tolist()
            pieces = [src[b].narrow(dim - 1, k * step, step) for k in order]
            out[b].narrow(dim - 1, 0, f * step).copy_(torch.cat(pieces, dim - 1))
    return out


def apply_view(x: torch.Tensor, v: ViewParams) -> torch.Tensor:
    """The pixel-space view of batch ``x`` under ``v`` (patch shuffle and geometry per image, then CutMix)."""
    if v.shuffle is not None:
        x = shuffle_patches(x, v.shuffle)
    if v.mode != "none":
        x = _apply_boxes(x, v.boxes.to(torch.float64), v.flip.bool(), x.shape[-1], mode=v.mode)
    if v.perm is not None:
        x0, x1, y0, y1 = v.cut
        mixed = x.clone()
        mixed[:, :, y0:y1, x0:x1] = x[v.perm.to(x.device), :, y0:y1, x0:x1]
        x = mixed
    return x


def view_generator(seed: int) -> torch.Generator:
    """The student's view stream for training seed ``seed`` (shared by the online student and :func:`relabel`)."""
    return torch.Generator().manual_seed(int(seed) * 7919 + 17)


def batch_loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> DataLoader:
    """The student's shuffled loader (one seeded permutation per epoch); relabelling replays it over indices."""
    g = torch.Generator().manual_seed(int(seed))
    return DataLoader(TensorDataset(images, labels), batch_size=min(batch_size, len(labels)), shuffle=True, generator=g,
                      pin_memory=options().pin_memory)  # in memory already: no workers, pinned for the GPU copy


def label_teacher(teacher: nn.Module, mode: str) -> nn.Module:
    """The teacher that labels views: the frozen module in eval mode, or a private copy in train mode (BSSL) so its
    running statistics never leak into the shared teacher (docs/methods.md §5.1 "BSSL trap")."""
    if mode == "train":
        return copy.deepcopy(teacher).train().requires_grad_(False)
    return teacher.eval()


def digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def store_meta(p, images, labels, teacher: nn.Module, seed: int, logits_dtype: str) -> dict:
    """Everything the stored labels depend on; the trainer's own values must match exactly."""
    meta = {
        "format": STORE_FORMAT, "batch_size": int(p.batch_size), "seed": int(seed), "epochs": int(p.epochs),
        "view": {"rrc_scale_min": p.rrc_scale_min, "crop_pad": p.crop_pad, "flip": p.flip, "cutmix": p.cutmix},
        "num_images": int(len(labels)), "images": digest(images, labels),
        "teacher": digest(*teacher.state_dict().values()), "teacher_mode": p.teacher_mode, "logits_dtype": logits_dtype,
    }
    if hasattr(teacher, "describe"):  # a labelling committee (reta.training.committee): members, weights, chunk size
        meta["labeller"] = teacher.describe()
    return meta


@torch.no_grad()
def relabel(
    images, labels, p, teacher: nn.Module, mean, std, seed: int, out_dir, logits_dtype: str = "float32"
) -> Path:
    """Write the stored soft labels of one student run (protocol ``p``, training seed ``seed``) to ``out_dir``."""
    if logits_dtype not in ("float16", "float32"):
        raise RetaError(f"soft-label logits_dtype must be float16 or float32, got {logits_dtype!r}")
    out = Path(out_dir)
    with atomic_directory(out) as tmp:
        gen, labeller = view_generator(seed), label_teacher(teacher, p.teacher_mode)
        device = next(teacher.parameters()).device
        loader = batch_loader(torch.arange(len(labels)), labels, p.batch_size, seed)
        _, _, h, w = images.shape
        for e in range(p.epochs):
            rec = {k: [] for k in FIELDS}
            offsets = [0]
            # exactly len(loader) batches, as the trainer takes them: running the iterator to its end would let the
            # shuffling sampler draw one more permutation from the shared generator when the batch size divides N
            for idx, _ in itertools.islice(loader, len(loader)):
                v = sample_view(p, len(idx), h, w, gen)
                x = normalize(apply_view(images[idx].to(device), v), mean, std)
                rec["ids"].append(idx.numpy())
                rec["boxes"].append(
                    (v.boxes if v.boxes is not None else torch.zeros(len(idx), 4, dtype=torch.float64)).numpy()
                )
                rec["flip"].append((v.flip if v.flip is not None else torch.zeros(len(idx), dtype=torch.bool)).numpy())
                rec["perm"].append((v.perm if v.perm is not None else torch.arange(len(idx))).numpy())
                rec["cut"].append(np.array(v.cut if v.cut is not None else (-1, -1, -1, -1), dtype=np.int64))
                rec["logits"].append(labeller(x).float().cpu().numpy().astype(logits_dtype))
                offsets.append(offsets[-1] + len(idx))
            edir = tmp / f"epoch_{e:04d}"
            edir.mkdir()
            for k in FIELDS:
                arr = (
                    np.asarray(offsets, dtype=np.int64) if k == "offsets"
                    else (np.stack(rec[k]) if k == "cut" else np.concatenate(rec[k]))
                )
                np.save(edir / f"{k}.npy", arr)
        meta = store_meta(p, images, labels, teacher, seed, logits_dtype)
        meta["mode"] = "stored"
        atomic_write_json(tmp / "meta.json", meta)
    return out


def ensure_relabelled(directory, images, labels, p, teacher: nn.Module, mean, std, seed: int,
                      logits_dtype: str = "float32") -> Path:
    """Reuse the store in ``directory`` when it fits this run exactly, else (re)write it with :func:`relabel`."""
    try:
        check_store(directory, store_meta(p, images, labels, teacher, seed, logits_dtype))
        return Path(directory)
    except RetaError:
        return relabel(images, labels, p, teacher, mean, std, seed, directory, logits_dtype)


def check_store(directory, expected: dict) -> dict:
    """Read ``meta.json`` of a store and compare it with the trainer's ``expected`` values (hard error on mismatch)."""
    path = Path(directory) / "meta.json"
    if not path.is_file():
        raise RetaError(f"stored soft labels: {path} not found (run the relabel step first)")
    meta = json.loads(path.read_text())
    bad = [k for k, v in expected.items() if json.loads(json.dumps(v)) != meta.get(k)]
    if bad:
        k = bad[0]
        raise RetaError(f"stored soft labels in {directory} do not fit this run: {k} is {meta.get(k)!r} there, "
                        f"{expected[k]!r} here ({len(bad)} mismatching key(s): {', '.join(bad)})")
    return meta


@dataclass
class StoredBatch:
    """One stored batch: its images and hard labels, its view and the teacher's logits of that view."""

    images: torch.Tensor
    labels: torch.Tensor
    view: ViewParams
    logits: torch.Tensor


class StoredBatches(Dataset):
    """Batch-level dataset over a store: flat item ``i`` is batch ``i − start(e)`` of epoch ``e``."""

    def __init__(self, directory, images: torch.Tensor, labels: torch.Tensor, mode: str) -> None:
        self.dir, self.images, self.labels, self.mode = Path(directory), images, labels, mode
        self.epochs = sorted(self.dir.glob("epoch_*"))
        self.arrays = [{k: np.load(d / f"{k}.npy", mmap_mode="r") for k in FIELDS} for d in self.epochs]
        counts = [len(a["offsets"]) - 1 for a in self.arrays]
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(int).tolist()

    def __len__(self) -> int:
        return self.starts[-1]

    def epoch_range(self, e: int) -> range:
        if not 0 <= e < len(self.arrays):
            raise RetaError(f"stored soft labels hold {len(self.arrays)} epochs; epoch {e} was asked for")
        return range(self.starts[e], self.starts[e + 1])

    def __getitem__(self, i: int) -> StoredBatch:
        e = next(k for k in range(len(self.arrays)) if self.starts[k] <= i < self.starts[k + 1])
        a, b = self.arrays[e], i - self.starts[e]
        lo, hi = int(a["offsets"][b]), int(a["offsets"][b + 1])
        ids = torch.from_numpy(np.array(a["ids"][lo:hi]))
        cut = tuple(int(c) for c in a["cut"][b])
        view = ViewParams(
            torch.from_numpy(np.array(a["boxes"][lo:hi])), torch.from_numpy(np.array(a["flip"][lo:hi])),
            self.mode, torch.from_numpy(np.array(a["perm"][lo:hi])) if cut[0] >= 0 else None,
            cut if cut[0] >= 0 else None,
        )
        return StoredBatch(
            self.images[ids], self.labels[ids], view, torch.from_numpy(np.array(a["logits"][lo:hi])).float()
        )


class EpochBatchSampler(Sampler):
    """Yields the stored batches of the current epoch in stored order; Lightning calls ``set_epoch`` each epoch."""

    def __init__(self, data: StoredBatches) -> None:
        self.data, self.epoch = data, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        return iter(self.data.epoch_range(self.epoch))

    def __len__(self) -> int:
        return len(self.data.epoch_range(self.epoch))


def view_mode(p) -> str:
    return "bilinear" if p.rrc_scale_min > 0 else ("nearest" if (p.crop_pad > 0 or p.flip) else "none")


def stored_loader(
    directory, images, labels, p, teacher: nn.Module, seed: int, logits_dtype: str = "float32"
) -> DataLoader:
    """A loader of :class:`StoredBatch` items for a student run, after checking the store against the run."""
    check_store(directory, store_meta(p, images, labels, teacher, seed, logits_dtype))
    data = StoredBatches(directory, images, labels, view_mode(p))
    return DataLoader(data, batch_size=None, sampler=EpochBatchSampler(data), collate_fn=_as_is)


def _as_is(item):
    return item

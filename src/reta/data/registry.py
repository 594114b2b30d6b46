"""From a dataset config to an :class:`~reta.data.base.ImageDataset`, and class-indexed sampling.

``load_split(cfg.dataset, "train", cfg.paths.data_dir)`` is the one way the rest of the package reads
real data; ``format`` in the dataset config picks the reader (:data:`FORMATS`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from reta.data.base import ImageDataset
from reta.data.cifar import load_cifar10, load_cifar100
from reta.data.folders import load_imagefolder, load_tiny_imagenet
from reta.data.formats import DatasetSpec, FileImageDataset, check_split
from reta.data.idx import load_idx
from reta.data.loading import options
from reta.errors import RetaError

Loader = Callable[[DatasetSpec, str, "str | None"], ImageDataset]

#: the dataset-config fields that fix the data a model sees, and so every cache key and resume fingerprint that names a
#: dataset (teachers, backbones, synthesis runs, student results); where the files are found (``root``, ``hint``,
#: ``download``) is not among them, so entries are found again on another machine
IDENTITY_FIELDS = ("name", "image_size", "channels", "mean", "std", "num_classes")


def dataset_identity(dataset_cfg: Any) -> dict:
    """The :data:`IDENTITY_FIELDS` of a dataset config (a dict or DictConfig), in that order."""
    return {k: dataset_cfg.get(k) for k in IDENTITY_FIELDS}


FORMATS: dict[str, Loader] = {
    "idx": load_idx,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "tiny_imagenet": load_tiny_imagenet,
    "imagefolder": load_imagefolder,
}


def load_split(dataset_cfg: Any, split: str, data_dir: str | None) -> ImageDataset:
    """Load the ``"train"`` or ``"test"`` split described by ``dataset_cfg`` (a dict or DictConfig).

    Keys: ``name``, ``format``, ``num_classes``, ``image_size``, ``channels``, ``mean``, ``std``,
    ``class_names`` (or null), ``root`` (or null: search under ``data_dir``), ``download``, ``hint``.
    Raises :class:`~reta.errors.DatasetNotFoundError` (one line, with the hint) when the files are not
    found and :class:`~reta.errors.RetaError` for an unknown format, a corrupt file or a config that
    disagrees with the files. The result's ``num_classes`` always equals the config's.
    """
    spec = DatasetSpec.from_cfg(dataset_cfg)
    check_split(split)
    loader = FORMATS.get(spec.format)
    if loader is None:
        raise RetaError(
            f"dataset '{spec.name}': unknown format '{spec.format}'; valid formats: {', '.join(sorted(FORMATS))}"
        )
    ds = loader(spec, split, data_dir)
    if options().decode_cache and isinstance(ds, FileImageDataset) and len(ds):
        ds.attach_decode_cache(options().cache_dir, spec.name, split)
    if ds.num_classes != spec.num_classes:
        raise RetaError(
            f"dataset '{spec.name}': loaded {ds.num_classes} class names but num_classes={spec.num_classes}"
        )
    return ds


def _check_targets(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    t = torch.as_tensor(targets)
    if t.ndim != 1 or t.dtype in (torch.float16, torch.float32, torch.float64, torch.bool):
        raise RetaError(f"targets must be a 1-D integer tensor, got {t.dtype} {tuple(t.shape)}")
    t = t.to(torch.long).cpu()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise RetaError(f"targets span [{int(t.min())}, {int(t.max())}], outside num_classes={num_classes}")
    return t


def class_index(targets: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """``num_classes`` LongTensors; entry ``c`` holds the indices of class ``c`` in ascending order."""
    t = _check_targets(targets, num_classes)
    order = torch.argsort(t, stable=True)
    counts = torch.bincount(t, minlength=num_classes).tolist()
    return [chunk.clone() for chunk in torch.split(order, counts)]


def sample_per_class(targets: torch.Tensor, num_classes: int, ipc: int, seed: int) -> torch.Tensor:
    """``ipc`` distinct indices per class, drawn without replacement with ``torch.Generator().manual_seed(seed)``.

    The result (LongTensor ``[num_classes * ipc]``) is ordered by class, then by draw order, so the same
    seed always gives the same indices in the same order, independent of the global RNG.
    """
    ipc = int(ipc)
    groups = class_index(targets, num_classes)
    smallest = min(len(g) for g in groups)
    if ipc <= 0:
        raise RetaError(f"ipc must be positive, got {ipc}")
    if ipc > smallest:
        c = min(range(num_classes), key=lambda k: len(groups[k]))
        raise RetaError(f"ipc={ipc} exceeds the smallest class (class {c} has {smallest} images)")
    g = torch.Generator().manual_seed(int(seed))
    picks = [grp[torch.randperm(len(grp), generator=g)[:ipc]] for grp in groups]
    return torch.cat(picks)

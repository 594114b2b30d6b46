"""Shared pieces of the on-disk dataset readers: the parsed dataset config and a lazy file-backed dataset.

The readers themselves live one module per family — :mod:`reta.data.idx` (MNIST-style IDX files),
:mod:`reta.data.cifar` (CIFAR python pickle batches) and :mod:`reta.data.folders` (Tiny-ImageNet-200 and
ImageFolder trees) — and :mod:`reta.data.registry` maps a config's ``format`` to one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reta.data.base import ImageDataset
from reta.data.loading import build_decode_cache, cache_file, parallel_map, usable_cache
from reta.errors import DatasetNotFoundError, RetaError

SPLITS = ("train", "test")


def _to_plain(cfg: Any) -> dict:
    """A plain ``dict`` from a dict or an OmegaConf ``DictConfig`` (interpolations resolved)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            try:
                return dict(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
            except Exception as e:  # missing (???) values, failing interpolations
                raise RetaError(f"dataset config cannot be resolved: {e}") from e
    except ImportError:  # pragma: no cover - omegaconf is a hard dependency
        pass
    if not isinstance(cfg, Mapping):
        raise RetaError(f"dataset config must be a mapping, got {type(cfg).__name__}")
    return dict(cfg)


@dataclass(frozen=True)
class DatasetSpec:
    """The dataset config (``conf/dataset/*.yaml``) as typed fields.

    ``root`` is an explicit directory (searched alone); when it is null a reader searches under ``data_dir``.
    ``class_names`` may be null: the reader then takes names from the files (CIFAR meta, Tiny-ImageNet
    ``words.txt``, ImageFolder directory names) or falls back to ``"0"``, ``"1"``, ….
    """

    name: str
    format: str
    num_classes: int
    image_size: int | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: tuple[str, ...] | None = None
    root: str | None = None
    download: bool = False
    hint: str = ""

    @classmethod
    def from_cfg(cls, cfg: Any) -> DatasetSpec:
        d = _to_plain(cfg)
        for key in ("name", "format", "num_classes"):
            if d.get(key) is None:
                raise RetaError(f"dataset config is missing required key '{key}'")
        names = d.get("class_names")
        num_classes = int(d["num_classes"])
        if num_classes <= 0:
            raise RetaError(f"dataset '{d['name']}': num_classes must be positive, got {num_classes}")
        if names is not None:
            names = tuple(str(n) for n in names)
            if len(names) != num_classes:
                raise RetaError(
                    f"dataset '{d['name']}': class_names has {len(names)} entries but num_classes={num_classes}"
                )
        opt_int = lambda v: None if v is None else int(v)  # noqa: E731
        opt_tuple = lambda v: None if v is None else tuple(float(x) for x in v)  # noqa: E731
        return cls(
            name=str(d["name"]),
            format=str(d["format"]),
            num_classes=num_classes,
            image_size=opt_int(d.get("image_size")),
            channels=opt_int(d.get("channels")),
            mean=opt_tuple(d.get("mean")),
            std=opt_tuple(d.get("std")),
            class_names=names,
            root=None if d.get("root") in (None, "") else str(d["root"]),
            download=bool(d.get("download") or False),
            hint=str(d.get("hint") or ""),
        )

    def search_bases(self, data_dir: str | None) -> list[Path]:
        """``[root]`` when root is set, else ``[data_dir/name]`` (empty when neither is known)."""
        if self.root is not None:
            return [Path(self.root).expanduser()]
        if data_dir is not None:
            return [Path(data_dir).expanduser() / self.name]
        return []

    def names_or(self, found: Sequence[str] | None) -> list[str]:
        """Config class names if given, else the names found in the files, else ``"0"…"K-1"``."""
        if self.class_names is not None:
            return list(self.class_names)
        if found is not None:
            return [str(n) for n in found]
        return [str(i) for i in range(self.num_classes)]


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise RetaError(f"unknown split '{split}'; valid splits: {', '.join(SPLITS)}")
    return split


def not_found(spec: DatasetSpec, looked: Sequence[Path | str], expected: str) -> DatasetNotFoundError:
    """The one-line error for a missing dataset: which one, where we looked, what we expected, the hint."""
    where = ", ".join(str(p) for p in looked) if looked else "nowhere (no root and no data_dir given)"
    msg = f"dataset '{spec.name}' (format {spec.format}) not found: looked in {where} for {expected}."
    if spec.hint:
        msg += f" {spec.hint}"
    return DatasetNotFoundError(msg)


def check_class_count(spec: DatasetSpec, found: int, what: str) -> None:
    if found != spec.num_classes:
        raise RetaError(
            f"dataset '{spec.name}': {what} has {found} classes but the config says num_classes={spec.num_classes}"
        )


def check_native_size(spec: DatasetSpec, channels: int, size: int) -> None:
    """Fixed-resolution formats (IDX, CIFAR) are not resized: the config must agree with the files."""
    if spec.channels is not None and spec.channels != channels:
        raise RetaError(
            f"dataset '{spec.name}': files have {channels} channel(s) but the config says channels={spec.channels}"
        )
    if spec.image_size is not None and spec.image_size != size:
        raise RetaError(
            f"dataset '{spec.name}': files are {size}x{size} but the config says image_size={spec.image_size}"
        )


def _to_8bit(im):
    """A 16/32-bit integer image (PIL mode ``I``, ``I;16`` …) as 8-bit ``L``: the top 8 of 16 bits (PIL's own
    ``convert("L")`` clips at 255, so a 16-bit PNG would load almost white)."""
    from PIL import Image

    arr = np.asarray(im)
    if im.mode.startswith("I;16") or arr.max(initial=0) > 255:
        arr = arr.astype(np.uint32) >> 8
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")


class FileImageDataset(ImageDataset):
    """A lazily decoded image dataset: one file per sample, decoded with PIL on ``load`` (``gather`` decodes on the
    thread pool of :mod:`reta.data.loading`), or read from the decode-once cache once it is attached.

    ``prepare`` maps the opened PIL image (already converted to RGB or L) to a PIL image of the final size;
    it must be a picklable callable (a module-level function or an object) so the dataset survives
    DataLoader worker processes.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        targets: Sequence[int] | torch.Tensor,
        class_names: Sequence[str],
        channels: int,
        prepare: Callable[[Any], Any],
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
        if self.targets.numel() != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {self.targets.numel()} targets")
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        if channels not in (1, 3):
            raise RetaError(f"image datasets support channels 1 or 3, got {channels}")
        self.mode = "L" if channels == 1 else "RGB"
        self.prepare = prepare
        self._cache_path: str | None = None
        self._mm: np.ndarray | None = None

    def decode(self, index: int) -> np.ndarray:
        """uint8 ``[C, H, W]`` of file ``index``: PIL decode, convert, ``prepare``."""
        from PIL import Image, UnidentifiedImageError

        path = self.paths[index]
        try:
            with Image.open(path) as im:
                img = im.convert(self.mode) if not im.mode.startswith("I") else _to_8bit(im).convert(self.mode)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            raise RetaError(f"cannot read image {path}: {e}") from e
        arr = np.asarray(self.prepare(img), dtype=np.uint8)
        return (arr[:, :, None] if arr.ndim == 2 else arr).transpose(2, 0, 1)

    def load(self, index: int) -> torch.Tensor:
        if self._cache_path is not None:
            return torch.from_numpy(np.array(self._cached()[index])).float().div_(255.0)
        return torch.from_numpy(np.ascontiguousarray(self.decode(index))).float().div_(255.0)

    def gather(self, indices) -> torch.Tensor:
        """Float32 batch in [0, 1]: from the decode cache when attached, else decoded on the thread pool of
        :mod:`reta.data.loading` (``data.num_workers`` threads)."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if idx.numel() == 0:
            raise ValueError("gather() needs at least one index")
        if self._cache_path is not None:
            return torch.from_numpy(self._cached()[idx.numpy()]).float().div_(255.0)
        return torch.stack(parallel_map(self.load, idx.tolist()))

    # ------------------------------------------------------------------------------- decode-once cache
    def attach_decode_cache(self, cache_dir: str, name: str, split: str) -> Path:
        """Decode every image once into a memory-mapped uint8 file (reused when it exists and its first, middle and
        last images match the files) and read from it."""
        first = self.decode(0)
        path = cache_file(cache_dir, name, split, self.paths, self.mode, int(first.shape[-1]))
        n = len(self.paths)
        probes = {0: first, **{i: self.decode(i) for i in {n // 2, n - 1} - {0}}}
        if not usable_cache(path, n, tuple(first.shape), probes):
            build_decode_cache(path, len(self.paths), tuple(first.shape), self.decode)
        self._cache_path, self._mm = str(path), None
        return path

    def _cached(self) -> np.ndarray:
        if self._mm is None:  # opened lazily: worker processes and threads each map the file themselves
            self._mm = np.load(self._cache_path, mmap_mode="r")
        return self._mm

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_mm"] = None
        return state

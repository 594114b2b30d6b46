"""CIFAR-10 / CIFAR-100 "python version" pickle batches.

Format (A. Krizhevsky, "The CIFAR-10 dataset", https://www.cs.toronto.edu/~kriz/cifar.html, section
"Dataset layout" / "Python / Matlab versions"): each batch file is a pickled dict (written by Python 2,
so it is read with ``encoding="bytes"`` and its keys are bytes) with ``data`` — a ``10000 x 3072`` uint8
numpy array, one row per 32x32 image, the 1024 red values first, then green, then blue, each channel in
row-major order — and ``labels`` (CIFAR-10) or ``fine_labels`` / ``coarse_labels`` (CIFAR-100).

- CIFAR-10: ``cifar-10-batches-py/data_batch_1`` … ``data_batch_5``, ``test_batch``; ``batches.meta``
  holds ``label_names``.
- CIFAR-100: ``cifar-100-python/train``, ``test``; ``meta`` holds ``fine_label_names`` (the 100 classes
  used here; the 20 coarse super-classes are not exposed).

torchvision's ``CIFAR10``/``CIFAR100`` verify every batch against the official MD5 sums, so they cannot
read anything but the official files; we parse the batches here and use torchvision only to download
when ``download: true``. Unpickling is restricted to the handful of globals these files need (numpy
array reconstruction), so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reta.data.base import TensorImageDataset
from reta.data.formats import DatasetSpec, check_class_count, check_native_size, check_split, not_found
from reta.errors import RetaError

# (top folder, train files, test files, meta file, label key, label-names key, torchvision class)
_LAYOUT = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "batches.meta",
        "labels",
        "label_names",
        "CIFAR10",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        ["test"],
        "meta",
        "fine_labels",
        "fine_label_names",
        "CIFAR100",
    ),
}

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except (
        OSError,
        EOFError,
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
    ) as e:
        raise RetaError(f"corrupt CIFAR file {path}: {e}") from e
    if not isinstance(obj, dict):
        raise RetaError(f"corrupt CIFAR file {path}: expected a pickled dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _field(d: dict, key: str, path: Path) -> Any:
    if key not in d:
        raise RetaError(f"corrupt CIFAR file {path}: missing key '{key}' (has {sorted(d)})")
    return d[key]


def read_batch(path: str | Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file → (uint8 ``[n, 3, 32, 32]``, int64 ``[n]``)."""
    path = Path(path)
    d = _unpickle(path)
    data = np.asarray(_field(d, "data", path))
    raw = np.asarray(_field(d, label_key, path))
    if raw.dtype.kind not in "iu":  # bytes, strings, floats: not class indices
        raise RetaError(f"corrupt CIFAR file {path}: '{label_key}' must be integers, got {raw.dtype}")
    labels = raw.astype(np.int64).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise RetaError(
            f"corrupt CIFAR file {path}: 'data' must be uint8 [n, 3072], got {data.dtype} {data.shape}"
        )
    if data.shape[0] != labels.shape[0]:
        raise RetaError(f"corrupt CIFAR file {path}: {data.shape[0]} images but {labels.shape[0]} labels")
    return data.reshape(-1, 3, 32, 32), labels


def read_label_names(path: str | Path, key: str) -> list[str]:
    path = Path(path)
    names = _field(_unpickle(path), key, path)
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _locate(
    spec: DatasetSpec, data_dir: str | None, top: str, files: list[str]
) -> tuple[Path | None, list[Path]]:
    """The batch folder holding all ``files``: ``<base>/<top>`` or ``<base>`` itself."""
    looked = []
    for base in spec.search_bases(data_dir):
        for d in (base / top, base):
            looked.append(d)
            if all((d / f).is_file() for f in files):
                return d, looked
    return None, looked


def load_cifar(spec: DatasetSpec, split: str, data_dir: str | None, variant: str) -> TensorImageDataset:
    """Load one split of CIFAR-10 (``variant="cifar10"``) or CIFAR-100 (``"cifar100"``, fine labels).

    Looks in ``root`` when set, else ``{data_dir}/{name}``, for the official folder
    (``cifar-10-batches-py`` / ``cifar-100-python``) or the batch files directly.
    """
    check_split(split)
    top, train_files, test_files, meta_file, label_key, names_key, tv = _LAYOUT[variant]
    files = train_files if split == "train" else test_files
    folder, looked = _locate(spec, data_dir, top, files)
    if folder is None and spec.download and spec.search_bases(data_dir):
        import torchvision.datasets as tvd

        target = spec.search_bases(data_dir)[0]
        try:
            getattr(tvd, tv)(root=str(target), train=split == "train", download=True)
        except Exception as e:  # network errors come in many types
            raise RetaError(f"dataset '{spec.name}': download into {target} failed: {e}") from e
        folder, looked = _locate(spec, data_dir, top, files)
    if folder is None:
        raise not_found(spec, looked, f"{top}/{{{','.join(files)}}}")

    parts = [read_batch(folder / f, label_key) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    check_native_size(spec, 3, 32)

    found_names = None
    if (folder / meta_file).is_file():
        found_names = read_label_names(folder / meta_file, names_key)
        check_class_count(spec, len(found_names), str(folder / meta_file))
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise RetaError(
            f"CIFAR files in {folder}: labels span [{labels.min()}, {labels.max()}], "
            f"outside num_classes={spec.num_classes}"
        )
    return TensorImageDataset(
        torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels), spec.names_or(found_names)
    )


def load_cifar10(spec: DatasetSpec, split: str, data_dir: str | None) -> TensorImageDataset:
    return load_cifar(spec, split, data_dir, "cifar10")


def load_cifar100(spec: DatasetSpec, split: str, data_dir: str | None) -> TensorImageDataset:
    return load_cifar(spec, split, data_dir, "cifar100")

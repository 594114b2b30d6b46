"""Generated datasets in the real on-disk layouts and stand-in weight files, for the paper-grid smoke run
(``make smoke-paper``, its test) and the loading benchmark; not part of the reta package.

* :func:`write_imagenet_layout` — torchvision ImageFolder ``<root>/{train,val}/<wnid>/*.JPEG`` (ImageNet-1K,
  ImageNette/ImageWoof as fast.ai distributes them), images of any ``size``;
* :func:`write_cifar100_layout` — ``<root>/cifar-100-python/{train,test,meta}``, the python pickle batches of
  https://www.cs.toronto.edu/~kriz/cifar.html (bytes keys, ``fine_labels``/``coarse_labels``, rows of 3072 bytes);
* :func:`write_weight_file` — the state dict of a freshly initialised timm model, where a pretrained one would be
  downloaded.

Pixels are class-structured (class ``c``: a bright horizontal band at height ``c / K`` over a class tint and noise) so
a network can learn them in one epoch; everything is a function of ``seed``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import timm
import torch


def class_image(c: int, num_classes: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 ``[H, W, 3]``: noise + a per-class tint + a bright band at rows ``[c H / K, (c + 1) H / K)``."""
    img = rng.integers(0, 70, size=(height, width, 3), dtype=np.int64)
    img[..., c % 3] += 40 + (60 * c) // max(num_classes, 1) % 80
    lo = (c * height) // num_classes
    hi = max(((c + 1) * height) // num_classes, lo + 1)
    img[lo:hi] += 150
    return img.clip(0, 255).astype(np.uint8)


def wnids(num_classes: int) -> list[str]:
    """ImageNet-style folder names ``n0000000k`` (sorted order = class order)."""
    return [f"n{k:08d}" for k in range(num_classes)]


def write_imagenet_layout(
    root: str | Path, num_classes: int, n_train: int, n_val: int, size: tuple[int, int] = (160, 120), seed: int = 0,
    quality: int = 90,
) -> Path:
    """``root/train/<wnid>/<wnid>_<i>.JPEG`` and ``root/val/<wnid>/…`` (``size`` = (width, height)); returns root."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    w, h = size
    for split, n in (("train", n_train), ("val", n_val)):
        for c, wnid in enumerate(wnids(num_classes)):
            d = root / split / wnid
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(class_image(c, num_classes, h, w, rng)).save(d / f"{wnid}_{i}.JPEG", quality=quality)
    return root


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar100_layout(root: str | Path, num_classes: int, n_train: int, n_test: int, seed: int = 0) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` with ``num_classes`` fine classes (``n_*`` images per class)."""
    rng = np.random.default_rng(seed)
    top = Path(root) / "cifar-100-python"
    top.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        labels = np.tile(np.arange(num_classes), n)
        data = np.stack([class_image(int(c), num_classes, 32, 32, rng).transpose(2, 0, 1).reshape(-1) for c in labels])
        _pickle(top / name, {
            b"filenames": [f"{name}_{i}.png".encode() for i in range(len(labels))],
            b"batch_label": name.encode(),
            b"fine_labels": labels.tolist(),
            b"coarse_labels": (labels // 5).tolist(),
            b"data": data,
        })
    _pickle(top / "meta", {
        b"fine_label_names": [f"class_{k:02d}".encode() for k in range(num_classes)],
        b"coarse_label_names": [f"coarse_{k:02d}".encode() for k in range((num_classes + 4) // 5)],
    })
    return Path(root)


def write_weight_file(name: str, num_classes: int, path: str | Path, in_chans: int = 3, seed: int = 0) -> Path:
    """Save the state dict of a freshly initialised timm model ``name`` (seeded) to ``path``: a stand-in for a
    downloaded weight file where no network is available."""
    torch.manual_seed(int(seed))
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path

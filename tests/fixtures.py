"""Tiny datasets written in the real on-disk formats, for tests.

Every writer is deterministic (``seed``) and returns the directory to use as the dataset config's
``root``. Pixel content is class-structured so a model can learn from it: :func:`synthetic_images`
gives the exact arrays the IDX and CIFAR writers store (train uses ``seed``, test ``seed + 1``);
the image-file writers paint each class a solid colour (:func:`class_color`) plus mild noise.

Formats: IDX per LeCun's MNIST page (http://yann.lecun.com/exdb/mnist/); CIFAR python batches per
Krizhevsky's page (https://www.cs.toronto.edu/~kriz/cifar.html), pickled with bytes keys exactly as the
Python-2-written originals read back with ``encoding="bytes"``; Tiny-ImageNet-200 as unpacked from
the CS231n archive; ImageFolder as torchvision expects.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def synthetic_images(
    n: int, num_classes: int, channels: int, size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 ``[n, channels, size, size]``, int64 ``[n]`` with label ``i % num_classes``).

    Class ``c`` has a bright horizontal band at rows ``[c*size//K, (c+1)*size//K)`` over low noise.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % num_classes
    images = rng.integers(0, 64, size=(n, channels, size, size), dtype=np.int64)
    for i, c in enumerate(labels):
        lo, hi = c * size // num_classes, max((c + 1) * size // num_classes, c * size // num_classes + 1)
        images[i, :, lo:hi, :] += 160
    return images.clip(0, 255).astype(np.uint8), labels


def class_color(c: int) -> tuple[int, int, int]:
    """A distinct, JPEG-robust RGB colour per class index."""
    palette = [(220, 30, 30), (30, 200, 40), (40, 50, 220), (230, 220, 40), (200, 40, 210), (40, 210, 210)]
    r, g, b = palette[c % len(palette)]
    shift = 20 * (c // len(palette))
    return (max(r - shift, 0), max(g - shift, 0), max(b - shift, 0))


def _idx_bytes(arr: np.ndarray) -> bytes:
    assert arr.dtype == np.uint8
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def write_idx_dataset(
    directory: str | Path,
    n_train: int = 40,
    n_test: int = 20,
    classes: int = 10,
    gz: bool = True,
    seed: int = 0,
) -> Path:
    """MNIST-style ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (28x28, uint8) in ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for prefix, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        images, labels = synthetic_images(n, classes, 1, 28, s)
        for stem, arr in (
            (f"{prefix}-images-idx3-ubyte", images[:, 0]),
            (f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8)),
        ):
            data = _idx_bytes(np.ascontiguousarray(arr))
            if gz:
                (d / f"{stem}.gz").write_bytes(gzip.compress(data, mtime=0))
            else:
                (d / stem).write_bytes(data)
    return d


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(directory: str | Path, n_per_batch: int = 10, n_test: int = 10, seed: int = 0) -> Path:
    """``directory/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``; returns ``directory``.

    Train images are ``synthetic_images(5 * n_per_batch, 10, 3, 32, seed)`` split into 5 consecutive batches.
    """
    d = Path(directory)
    top = d / "cifar-10-batches-py"
    top.mkdir(parents=True, exist_ok=True)
    images, labels = synthetic_images(5 * n_per_batch, 10, 3, 32, seed)
    for b in range(5):
        sl = slice(b * n_per_batch, (b + 1) * n_per_batch)
        _pickle(
            top / f"data_batch_{b + 1}",
            {
                b"batch_label": f"training batch {b + 1} of 5".encode(),
                b"labels": labels[sl].tolist(),
                b"data": images[sl].reshape(-1, 3072),
                b"filenames": [f"img_{i}.png".encode() for i in range(sl.start, sl.stop)],
            },
        )
    t_images, t_labels = synthetic_images(n_test, 10, 3, 32, seed + 1)
    _pickle(
        top / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": t_labels.tolist(),
            b"data": t_images.reshape(-1, 3072),
            b"filenames": [f"test_{i}.png".encode() for i in range(n_test)],
        },
    )
    _pickle(
        top / "batches.meta",
        {
            b"num_cases_per_batch": n_per_batch,
            b"label_names": [n.encode() for n in CIFAR10_NAMES],
            b"num_vis": 3072,
        },
    )
    return d


def cifar100_names() -> list[str]:
    return [f"fine_{i:02d}" for i in range(100)]


def write_cifar100(directory: str | Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """``directory/cifar-100-python/{train,test,meta}`` with fine and coarse labels; returns ``directory``."""
    d = Path(directory)
    top = d / "cifar-100-python"
    top.mkdir(parents=True, exist_ok=True)
    for name, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        images, labels = synthetic_images(n, 100, 3, 32, s)
        _pickle(
            top / name,
            {
                b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
                b"batch_label": name.encode(),
                b"fine_labels": labels.tolist(),
                b"coarse_labels": (labels // 5).tolist(),
                b"data": images.reshape(-1, 3072),
            },
        )
    _pickle(
        top / "meta",
        {
            b"fine_label_names": [n.encode() for n in cifar100_names()],
            b"coarse_label_names": [f"coarse_{i:02d}".encode() for i in range(20)],
        },
    )
    return d


def _save_image(
    path: Path, color: Sequence[int], size: tuple[int, int], rng: np.random.Generator, gray: bool = False
) -> None:
    from PIL import Image

    w, h = size
    arr = np.clip(
        np.array(color, dtype=np.int64)[None, None, :] + rng.integers(-8, 9, size=(h, w, 3)), 0, 255
    ).astype(np.uint8)
    img = Image.fromarray(arr)
    if gray:
        img = img.convert("L")
    img.save(path)


def tiny_wnids(n_classes: int) -> list[str]:
    """Fake WordNet ids, deliberately NOT in sorted order (as in the real ``wnids.txt``)."""
    ids = [f"n{(9 - i % 10) * 1000000 + i * 7919:08d}" for i in range(n_classes)]
    assert ids != sorted(ids) or n_classes < 2
    return ids


def write_tiny_imagenet(
    directory: str | Path, n_classes: int = 3, n_train: int = 2, n_val: int = 2, size: int = 64, seed: int = 0
) -> Path:
    """``directory/tiny-imagenet-200/`` with wnids.txt (unsorted), words.txt, train/, val/; returns ``directory``.

    Class ``k`` in **sorted-wnid order** is painted ``class_color(k)``; the first train image of the last
    class is grayscale (as some real ones are). Val files are named ``val_<i>.JPEG`` interleaving classes.
    """
    rng = np.random.default_rng(seed)
    d = Path(directory)
    root = d / "tiny-imagenet-200"
    wnids = tiny_wnids(n_classes)
    order = {w: k for k, w in enumerate(sorted(wnids))}
    (root / "val" / "images").mkdir(parents=True, exist_ok=True)
    (root / "test" / "images").mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    words = [f"{w}\tthing {order[w]}, other name {order[w]}" for w in wnids] + ["n99999999\tunused class"]
    (root / "words.txt").write_text("\n".join(words) + "\n")
    for w in wnids:
        img_dir = root / "train" / w / "images"
        img_dir.mkdir(parents=True)
        boxes = []
        for k in range(n_train):
            gray = order[w] == n_classes - 1 and k == 0
            _save_image(img_dir / f"{w}_{k}.JPEG", class_color(order[w]), (size, size), rng, gray=gray)
            boxes.append(f"{w}_{k}.JPEG\t0\t0\t{size - 1}\t{size - 1}")
        (root / "train" / w / f"{w}_boxes.txt").write_text("\n".join(boxes) + "\n")
    ann = []
    for i in range(n_val * n_classes):
        w = wnids[i % n_classes]
        _save_image(root / "val" / "images" / f"val_{i}.JPEG", class_color(order[w]), (size, size), rng)
        ann.append(f"val_{i}.JPEG\t{w}\t1\t2\t{size - 2}\t{size - 3}")
    (root / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    _save_image(root / "test" / "images" / "test_0.JPEG", (128, 128, 128), (size, size), rng)
    return d


def write_imagefolder(
    directory: str | Path,
    classes: Sequence[str] = ("n01440764", "n02102040", "n02979186"),
    n_train: int = 2,
    n_val: int = 1,
    size: tuple[int, int] = (40, 30),
    ext: str = "png",
    seed: int = 0,
) -> Path:
    """``directory/{train,val}/<class>/<k>.<ext>`` (PIL-written, ``size`` = (width, height)); returns ``directory``.

    Class folder ``classes[i]`` is painted ``class_color(rank)`` where rank is its position in
    ``sorted(classes)`` (= its ImageFolder label). ``n_val=0`` leaves a class's val folder out entirely.
    """
    rng = np.random.default_rng(seed)
    d = Path(directory)
    rank = {c: k for k, c in enumerate(sorted(classes))}
    for split, n in (("train", n_train), ("val", n_val)):
        for c in classes:
            if n == 0:
                continue
            cdir = d / split / c
            cdir.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                _save_image(cdir / f"{c}_{k}.{ext}", class_color(rank[c]), size, rng)
    return d

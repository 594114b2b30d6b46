"""Dataset readers against tiny fixtures in the real on-disk formats (see tests/fixtures.py)."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from reta.data.base import ImageDataset, TensorImageDataset
from reta.data.idx import FASHION_MNIST_PACKAGE, debian_package_dir, read_idx
from reta.data.registry import FORMATS, load_split
from reta.errors import DatasetNotFoundError, RetaError

from fixtures import (
    CIFAR10_NAMES,
    cifar100_names,
    class_color,
    synthetic_images,
    tiny_wnids,
    write_cifar10,
    write_cifar100,
    write_idx_dataset,
    write_imagefolder,
    write_tiny_imagenet,
)

FASHION_DIR = debian_package_dir(FASHION_MNIST_PACKAGE, "train-images-idx3-ubyte")
HINT = "Get it with: make data-FOO (see README)."


def cfg(
    name: str, fmt: str, num_classes: int, image_size: int | None, channels: int = 3, root=None, **kw
) -> dict:
    c = {
        "name": name,
        "format": fmt,
        "num_classes": num_classes,
        "image_size": image_size,
        "channels": channels,
        "mean": [0.5] * channels,
        "std": [0.25] * channels,
        "class_names": None,
        "root": None if root is None else str(root),
        "download": False,
        "hint": HINT,
    }
    c.update(kw)
    return c


# ------------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loads_both_splits(tmp_path, gz):
    write_idx_dataset(tmp_path / "ds", n_train=30, n_test=12, classes=10, gz=gz, seed=3)
    c = cfg(
        "toy_mnist", "idx", 10, 28, channels=1, root=tmp_path / "ds", class_names=[f"c{i}" for i in range(10)]
    )
    for split, n, seed in (("train", 30, 3), ("test", 12, 4)):
        ds = load_split(c, split, None)
        assert isinstance(ds, TensorImageDataset)
        assert ds.images.shape == (n, 1, 28, 28) and ds.images.dtype == torch.uint8
        assert ds.targets.dtype == torch.int64
        want_images, want_labels = synthetic_images(n, 10, 1, 28, seed)
        assert torch.equal(ds.images, torch.from_numpy(want_images))
        assert torch.equal(ds.targets, torch.from_numpy(want_labels))
        assert ds.class_names == [f"c{i}" for i in range(10)] and ds.num_classes == 10
        x, y = ds[1]
        assert (
            x.dtype == torch.float32 and x.shape == (1, 28, 28) and 0 <= x.min() and x.max() <= 1 and y == 1
        )


def test_idx_searches_data_dir_name_and_accepts_omegaconf(tmp_path):
    from omegaconf import OmegaConf

    write_idx_dataset(tmp_path / "toy_mnist", n_train=10, n_test=10, gz=True)
    c = OmegaConf.create(cfg("toy_mnist", "idx", 10, 28, channels=1))
    ds = load_split(c, "train", str(tmp_path))
    assert len(ds) == 10 and ds.class_names == [str(i) for i in range(10)]


def test_idx_fashion_fallback_dir(tmp_path):
    write_idx_dataset(tmp_path / "fashion-mnist", n_train=10, n_test=5)
    ds = load_split(cfg("fashion_mnist", "idx", 10, 28, channels=1), "test", str(tmp_path))
    assert len(ds) == 5


def test_idx_mnist_never_falls_back_to_fashion(tmp_path):
    write_idx_dataset(tmp_path / "fashion-mnist", n_train=10, n_test=5)
    with pytest.raises(DatasetNotFoundError) as e:
        load_split(cfg("mnist", "idx", 10, 28, channels=1), "train", str(tmp_path))
    assert "fashion-mnist" not in str(e.value) and HINT in str(e.value)


@pytest.mark.parametrize(
    "damage",
    ["magic", "truncated", "bad_gzip", "count_mismatch"],
)
def test_idx_corrupt_files_raise(tmp_path, damage):
    d = write_idx_dataset(tmp_path / "ds", n_train=10, n_test=5, gz=True)
    img = d / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(img.read_bytes())
    if damage == "magic":
        img.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + raw[4:]))  # labels-like magic in an image file
    elif damage == "truncated":
        img.write_bytes(gzip.compress(raw[:-100]))
    elif damage == "bad_gzip":
        img.write_bytes(img.read_bytes()[:30])
    else:
        write_idx_dataset(tmp_path / "other", n_train=9, n_test=5, gz=True)
        (d / "train-labels-idx1-ubyte.gz").write_bytes(
            (tmp_path / "other" / "train-labels-idx1-ubyte.gz").read_bytes()
        )
    with pytest.raises(RetaError) as e:
        load_split(cfg("toy", "idx", 10, 28, channels=1, root=d), "train", None)
    assert "\n" not in str(e.value) and "idx" in str(e.value).lower()


def test_read_idx_rejects_html_page(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(b"<html><body>404</body></html>")
    with pytest.raises(RetaError, match="magic"):
        read_idx(p)


def test_idx_config_mismatch_raises(tmp_path):
    d = write_idx_dataset(tmp_path / "ds", n_train=10, n_test=5)
    with pytest.raises(RetaError, match="image_size=32"):
        load_split(cfg("toy", "idx", 10, 32, channels=1, root=d), "train", None)
    with pytest.raises(RetaError, match="out of range"):
        load_split(cfg("toy", "idx", 5, 28, channels=1, root=d), "train", None)


@pytest.mark.skipif(
    FASHION_DIR is None or not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not installed"
)
def test_real_fashion_mnist(tmp_path):
    c = cfg("fashion_mnist", "idx", 10, 28, channels=1)
    train = load_split(c, "train", str(tmp_path))  # empty data_dir → system copy
    test = load_split(c, "test", str(tmp_path))
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.num_classes == 10
    assert torch.equal(torch.bincount(train.targets), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(test.targets), torch.full((10,), 1000))


# ----------------------------------------------------------------------------------------------- CIFAR


def test_cifar10(tmp_path):
    write_cifar10(tmp_path / "cifar10", n_per_batch=6, n_test=8, seed=5)
    c = cfg("cifar10", "cifar10", 10, 32)
    train = load_split(c, "train", str(tmp_path))
    test = load_split(c, "test", str(tmp_path))
    assert train.images.shape == (30, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (8, 3, 32, 32)
    want, labels = synthetic_images(30, 10, 3, 32, 5)
    assert torch.equal(train.images, torch.from_numpy(want)) and torch.equal(
        train.targets, torch.from_numpy(labels)
    )
    assert train.class_names == CIFAR10_NAMES and test.class_names == CIFAR10_NAMES


def test_cifar10_root_may_point_at_batch_folder(tmp_path):
    write_cifar10(tmp_path, n_per_batch=2, n_test=3)
    ds = load_split(cfg("cifar10", "cifar10", 10, 32, root=tmp_path / "cifar-10-batches-py"), "test", None)
    assert len(ds) == 3


def test_cifar100_fine_labels_and_names(tmp_path):
    write_cifar100(tmp_path / "c100", n_train=120, n_test=100, seed=2)
    c = cfg("cifar100", "cifar100", 100, 32, root=tmp_path / "c100")
    train, test = load_split(c, "train", None), load_split(c, "test", None)
    assert train.images.shape == (120, 3, 32, 32) and test.images.shape == (100, 3, 32, 32)
    assert int(train.targets.max()) == 99 and train.class_names == cifar100_names()
    want, labels = synthetic_images(100, 100, 3, 32, 3)
    assert torch.equal(test.images, torch.from_numpy(want)) and torch.equal(
        test.targets, torch.from_numpy(labels)
    )


def test_cifar_config_names_override_meta(tmp_path):
    write_cifar10(tmp_path, n_per_batch=1, n_test=2)
    names = [f"k{i}" for i in range(10)]
    ds = load_split(cfg("cifar10", "cifar10", 10, 32, root=tmp_path, class_names=names), "test", None)
    assert ds.class_names == names


def test_cifar_rejects_malicious_pickle(tmp_path):
    write_cifar10(tmp_path, n_per_batch=1, n_test=2)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f)
    with pytest.raises(RetaError, match="not allowed"):
        load_split(cfg("cifar10", "cifar10", 10, 32, root=tmp_path), "test", None)


def test_cifar_bad_data_shape(tmp_path):
    write_cifar10(tmp_path, n_per_batch=1, n_test=2)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(RetaError, match="3072"):
        load_split(cfg("cifar10", "cifar10", 10, 32, root=tmp_path), "test", None)


# --------------------------------------------------------------------------------------- Tiny-ImageNet


def _near(x: torch.Tensor, rgb, tol=0.1) -> bool:
    want = torch.tensor(rgb, dtype=torch.float32).div(255).view(3, 1, 1)
    return bool((x.mean(dim=(1, 2), keepdim=True) - want).abs().max() < tol)


def test_tiny_imagenet_sorted_wnids_and_val_labels(tmp_path):
    write_tiny_imagenet(tmp_path / "tiny_imagenet", n_classes=4, n_train=2, n_val=2)
    c = cfg("tiny_imagenet", "tiny_imagenet", 4, 64)
    train = load_split(c, "train", str(tmp_path))
    test = load_split(c, "test", str(tmp_path))
    wnids = tiny_wnids(4)
    assert train.wnids == sorted(wnids) and train.wnids != wnids
    assert train.class_names == [f"thing {k}" for k in range(4)]
    assert len(train) == 8 and train.targets.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # val_i belongs to wnids[i % 4] in file order → sorted position
    rank = {w: k for k, w in enumerate(sorted(wnids))}
    assert test.targets.tolist() == [rank[wnids[i % 4]] for i in range(8)]
    for ds in (train, test):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 64, 64) and x.dtype == torch.float32
            gray_ok = ds is train and i == 6  # first train image of the last class is grayscale
            assert gray_ok or _near(x, class_color(y)), (i, y)
    assert train.gather([0, 7]).shape == (2, 3, 64, 64)


def test_tiny_imagenet_resizes_to_image_size(tmp_path):
    write_tiny_imagenet(tmp_path, n_classes=2, n_train=1, n_val=1)
    ds = load_split(cfg("tiny", "tiny_imagenet", 2, 32, root=tmp_path), "test", None)
    assert ds[0][0].shape == (3, 32, 32)


def test_tiny_imagenet_bad_annotation(tmp_path):
    write_tiny_imagenet(tmp_path, n_classes=2, n_train=1, n_val=1)
    ann = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_99.JPEG\tn12345678\t0\t0\t1\t1\n")
    with pytest.raises(RetaError, match="val_annotations.txt:3"):
        load_split(cfg("tiny", "tiny_imagenet", 2, 64, root=tmp_path), "test", None)


# ----------------------------------------------------------------------------------------- ImageFolder


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_imagefolder_resize_crop_and_labels(tmp_path, ext):
    classes = ("n02979186", "n01440764", "n02102040")  # not sorted on purpose
    write_imagefolder(tmp_path / "imagenette", classes=classes, n_train=2, n_val=1, size=(40, 30), ext=ext)
    c = cfg("imagenette", "imagefolder", 3, 16)
    train, test = load_split(c, "train", str(tmp_path)), load_split(c, "test", str(tmp_path))
    assert isinstance(train, ImageDataset)
    assert train.class_names == sorted(classes) and len(train) == 6 and len(test) == 3
    assert train.targets.tolist() == [0, 0, 1, 1, 2, 2] and test.targets.tolist() == [0, 1, 2]
    for ds in (train, test):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
            assert _near(x, class_color(y))


def test_imagefolder_val_missing_class_keeps_train_order(tmp_path):
    write_imagefolder(tmp_path, classes=("a", "b", "c"), n_train=1, n_val=1)
    for p in (tmp_path / "val" / "b").iterdir():
        p.unlink()
    (tmp_path / "val" / "b").rmdir()
    test = load_split(
        cfg("toy", "imagefolder", 3, 8, root=tmp_path, class_names=["A", "B", "C"]), "test", None
    )
    assert test.targets.tolist() == [0, 2] and test.class_names == ["A", "B", "C"]
    assert _near(test[1][0], class_color(2))


def test_imagefolder_class_count_mismatch(tmp_path):
    write_imagefolder(tmp_path, classes=("a", "b"), n_train=1, n_val=1)
    with pytest.raises(RetaError, match="num_classes=3"):
        load_split(cfg("toy", "imagefolder", 3, 8, root=tmp_path), "train", None)


def test_imagefolder_unreadable_image(tmp_path):
    write_imagefolder(tmp_path, classes=("a", "b"), n_train=1, n_val=1)
    bad = next((tmp_path / "train" / "a").iterdir())
    bad.write_bytes(b"not an image")
    ds = load_split(cfg("toy", "imagefolder", 2, 8, root=tmp_path), "train", None)
    with pytest.raises(RetaError, match="cannot read image"):
        ds[0]


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "fmt,classes,size",
    [
        ("idx", 10, 28),
        ("cifar10", 10, 32),
        ("cifar100", 100, 32),
        ("tiny_imagenet", 200, 64),
        ("imagefolder", 10, 32),
    ],
)
@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_dataset_message(tmp_path, fmt, classes, size, split):
    with pytest.raises(DatasetNotFoundError) as e:
        load_split(cfg("nowhere_ds", fmt, classes, size), split, str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and "nowhere_ds" in msg and HINT in msg and str(tmp_path / "nowhere_ds") in msg


def test_missing_everything_without_data_dir():
    with pytest.raises(DatasetNotFoundError, match="no root and no data_dir"):
        load_split(cfg("x", "cifar10", 10, 32), "train", None)


def test_unknown_format_and_split(tmp_path):
    with pytest.raises(RetaError) as e:
        load_split(cfg("x", "lmdb", 10, 32), "train", str(tmp_path))
    for name in FORMATS:
        assert name in str(e.value)
    with pytest.raises(RetaError, match="valid splits"):
        load_split(cfg("x", "cifar10", 10, 32), "val", str(tmp_path))


def test_config_errors():
    with pytest.raises(RetaError, match="'format'"):
        load_split({"name": "x", "num_classes": 3}, "train", None)
    with pytest.raises(RetaError, match="class_names has 2"):
        load_split(cfg("x", "cifar10", 3, 32, class_names=["a", "b"]), "train", None)


def test_the_debian_package_directory_is_asked_from_dpkg_not_written_in():
    assert debian_package_dir("reta-no-such-package", "train-images-idx3-ubyte") is None
    if FASHION_DIR is not None:  # the package make install installs: its IDX files are where dpkg says
        assert any((FASHION_DIR / f"train-images-idx3-ubyte{ext}").exists() for ext in ("", ".gz"))

"""Data throughput pieces give the same pixels as decoding one image at a time: threaded ``gather``, DataLoader
workers, and the decode-once cache (which is written once, atomically, and reused)."""

from __future__ import annotations

import pytest
import torch

from reta.data import loading
from reta.data.registry import load_split
from reta.errors import RetaError
from reta.training.teacher import train_loader

from fixtures import write_imagefolder


@pytest.fixture()
def folder(tmp_path):
    root = write_imagefolder(tmp_path / "f", classes=("a", "b", "c"), n_train=5, n_val=2, size=(50, 40), ext="jpg")
    cfg = {"name": "toy", "format": "imagefolder", "num_classes": 3, "image_size": 24, "channels": 3,
           "mean": [0.5] * 3, "std": [0.5] * 3, "root": str(root)}
    yield cfg
    loading.configure({"num_workers": 0}, None)


def _sequential(ds, idx):
    return torch.stack([ds.load(int(i)) for i in idx])


def test_threaded_gather_equals_sequential_decoding(folder):
    loading.configure({"num_workers": 0}, None)
    ds = load_split(folder, "train", None)
    idx = torch.tensor([14, 0, 3, 3, 9])
    expect = _sequential(ds, idx)
    loading.configure({"num_workers": 2}, None)
    assert torch.equal(ds.gather(idx), expect)


def test_decode_cache_is_bit_identical_written_once_and_reused(folder, tmp_path):
    loading.configure({"num_workers": 0}, None)
    plain = load_split(folder, "train", None)
    loading.configure({"num_workers": 2, "decode_cache": True}, str(tmp_path / "cache"))
    cached = load_split(folder, "train", None)
    (npy,) = (tmp_path / "cache" / "decoded").iterdir()
    assert npy.name.startswith("toy_train_24px_") and npy.suffix == ".npy"
    idx = torch.arange(len(plain))
    assert torch.equal(cached.gather(idx), plain.gather(idx))
    assert torch.equal(cached.load(7), plain.load(7))
    mtime = npy.stat().st_mtime_ns
    load_split(folder, "train", None)
    assert npy.stat().st_mtime_ns == mtime and len(list(npy.parent.iterdir())) == 1  # reused, no temp file left
    load_split(folder, "test", None)
    assert len(list(npy.parent.iterdir())) == 2  # one file per split


def test_worker_processes_give_the_same_batches(folder):
    loading.configure({"num_workers": 0}, None)
    ds = load_split(folder, "train", None)
    serial = [(x.clone(), y.clone()) for x, y in train_loader(ds, 4, seed=3)]
    loading.configure({"num_workers": 2, "persistent_workers": True}, None)
    loader = train_loader(ds, 4, seed=3)
    assert loader.num_workers == 2 and loader.persistent_workers
    parallel = list(loader)
    assert len(parallel) == len(serial)
    for (a, ya), (b, yb) in zip(serial, parallel):
        assert torch.equal(a, b) and torch.equal(ya, yb)


def test_bad_data_config_fails_in_one_line():
    with pytest.raises(RetaError, match="num_workers"):
        loading.configure({"num_workers": -1}, None)
    with pytest.raises(RetaError, match="unknown keys"):
        loading.configure({"workers": 2}, None)
    with pytest.raises(RetaError, match="cache_dir"):
        loading.configure({"decode_cache": True}, None)
    assert loading.configure({"num_workers": "auto"}, None).num_workers == max(0, min(8, loading.cpu_count() - 1))

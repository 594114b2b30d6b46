"""Distilled-set format v1: round trip, exports, validation, atomicity; and the atomic-write helpers."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import reta.data.distilled as distilled
from reta.data.distilled import DistilledSet, load_distilled, save_distilled
from reta.errors import RetaError
from reta.utils.io import atomic_torch_save, atomic_write_json


def make_set(k=3, ipc=2, c=3, h=8, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(k * ipc, c, h, w, generator=g)
    labels = torch.arange(k).repeat_interleave(ipc)
    meta = {
        "dataset": "toy",
        "num_classes": k,
        "ipc": ipc,
        "mean": [0.5] * c,
        "std": [0.25] * c,
        "method": "random",
        "seed": seed,
        "teacher": {"name": "convnet", "test_acc": 0.9},
    }
    names = [f"class {i}/x" for i in range(k)]
    return images, labels, meta, names


def test_round_trip_with_soft_labels(tmp_path):
    images, labels, meta, names = make_set()
    soft = torch.softmax(torch.randn(6, 3), dim=1)
    out = save_distilled(tmp_path / "set", images, labels, meta, soft_labels=soft, class_names=names)
    assert out == tmp_path / "set"
    ds = load_distilled(out)
    assert isinstance(ds, DistilledSet) and len(ds) == 6
    assert (
        torch.equal(ds.images, images)
        and torch.equal(ds.labels, labels)
        and torch.equal(ds.soft_labels, soft)
    )
    assert ds.meta["format_version"] == 1 and ds.meta["image_shape"] == [3, 8, 10]
    assert ds.class_names == names and ds.ipc == 2 and ds.num_classes == 3
    assert ds.meta["teacher"] == {"name": "convnet", "test_acc": 0.9} and "package_version" in ds.meta
    assert ds.mean == [0.5] * 3 and ds.std == [0.25] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temp dirs left


def test_save_sorts_by_class_and_keeps_soft_labels_aligned(tmp_path):
    images, labels, meta, names = make_set(k=3, ipc=2)
    perm = torch.tensor([5, 0, 3, 1, 4, 2])
    soft = torch.eye(3)[labels]
    save_distilled(
        tmp_path / "s", images[perm], labels[perm], meta, soft_labels=soft[perm], class_names=names, png=False
    )
    ds = load_distilled(tmp_path / "s")
    assert ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(ds.soft_labels.argmax(1), ds.labels)
    # stable: within a class, input order is kept (perm puts 0 before 1, 3 before 2, 5 before 4)
    assert torch.equal(ds.images, images[torch.tensor([0, 1, 3, 2, 5, 4])])
    assert not (tmp_path / "s" / "png").exists() and (tmp_path / "s" / "grid.png").exists()


@pytest.mark.parametrize("c", [1, 3])
def test_grid_png_size(tmp_path, c):
    images, labels, meta, names = make_set(k=4, ipc=3, c=c, h=8, w=10)
    out = save_distilled(tmp_path / "g", images, labels, meta, class_names=names)
    with Image.open(out / "grid.png") as im:
        assert im.size == (3 * (10 + 2) + 2, 4 * (8 + 2) + 2)


def test_grid_is_downscaled_when_huge(tmp_path, monkeypatch):
    monkeypatch.setattr(distilled, "GRID_MAX_PIXELS", 40 * 40)
    images, labels, meta, names = make_set(k=4, ipc=3, h=16, w=16)
    out = save_distilled(tmp_path / "g", images, labels, meta, class_names=names, png=False)
    with Image.open(out / "grid.png") as im:
        assert im.size[0] * im.size[1] <= 40 * 40


def test_png_export_tree(tmp_path):
    images, labels, meta, names = make_set(k=12, ipc=2, c=1)
    out = save_distilled(tmp_path / "p", images, labels, meta, class_names=names)
    dirs = sorted(p.name for p in (out / "png").iterdir())
    assert len(dirs) == 12 and dirs[0] == "00_class_0_x" and dirs[11] == "11_class_11_x"
    files = sorted((out / "png").rglob("*.png"))
    assert len(files) == 24
    assert sorted(p.name for p in (out / "png" / dirs[5]).iterdir()) == ["0.png", "1.png"]
    with Image.open(out / "png" / dirs[1] / "1.png") as im:
        assert im.size == (10, 8) and im.mode == "L"
        px = torch.tensor(list(im.getdata()), dtype=torch.float32).view(8, 10) / 255
    assert (px - images[3, 0]).abs().max() <= 0.5 / 255 + 1e-6


def test_save_rejects_bad_input_and_writes_nothing(tmp_path):
    images, labels, meta, names = make_set()
    with pytest.raises(RetaError, match=r"outside \[0, 1\]"):
        save_distilled(tmp_path / "x", images * 2, labels, meta, class_names=names)
    with pytest.raises(RetaError, match="class 2 has 1"):
        save_distilled(tmp_path / "x", images[:5], labels[:5], meta, class_names=names)
    bad_meta = {k: v for k, v in meta.items() if k != "method"}
    with pytest.raises(RetaError, match="method"):
        save_distilled(tmp_path / "x", images, labels, bad_meta, class_names=names)
    with pytest.raises(RetaError, match="class_names"):
        save_distilled(tmp_path / "x", images, labels, meta)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------- load validation


@pytest.fixture
def good(tmp_path):
    images, labels, meta, names = make_set()
    return save_distilled(tmp_path / "good", images, labels, meta, class_names=names, png=False)


def _rewrite_meta(d, **changes):
    meta = json.loads((d / "meta.json").read_text())
    meta.update(changes)
    (d / "meta.json").write_text(json.dumps(meta))


def test_load_rejects_wrong_order(good):
    torch.save(torch.tensor([1, 1, 0, 0, 2, 2]), good / "labels.pt")
    with pytest.raises(RetaError, match="labels.pt: not ordered by class"):
        load_distilled(good)


def test_load_rejects_count_mismatch(good):
    _rewrite_meta(good, ipc=3)
    with pytest.raises(RetaError, match="labels.pt: class 0 has 2 images but meta.json ipc=3"):
        load_distilled(good)
    _rewrite_meta(good, ipc=2)
    torch.save(torch.tensor([0, 0, 0, 1, 2, 2]), good / "labels.pt")
    with pytest.raises(RetaError, match="class 0 has 3"):
        load_distilled(good)


def test_load_rejects_out_of_range(good):
    torch.save(torch.full((6, 3, 8, 10), 1.5), good / "images.pt")
    with pytest.raises(RetaError, match=r"images.pt: pixel values span"):
        load_distilled(good)
    torch.save(torch.zeros(6, 3, 8, 10, dtype=torch.float64), good / "images.pt")
    with pytest.raises(RetaError, match="images.pt: expected float32"):
        load_distilled(good)
    torch.save(torch.zeros(6, 3, 8, 8), good / "images.pt")
    with pytest.raises(RetaError, match="image_shape"):
        load_distilled(good)


def test_load_rejects_labels_out_of_range(good):
    torch.save(torch.tensor([0, 0, 1, 1, 2, 3]), good / "labels.pt")
    with pytest.raises(RetaError, match="labels.pt: labels span"):
        load_distilled(good)


def test_load_rejects_missing_files_and_versions(good, tmp_path):
    (good / "labels.pt").unlink()
    with pytest.raises(RetaError, match="labels.pt: missing"):
        load_distilled(good)
    _rewrite_meta(good, format_version=2)
    with pytest.raises(RetaError, match="format_version 2"):
        load_distilled(good)
    (good / "meta.json").write_text("{not json")
    with pytest.raises(RetaError, match="meta.json: cannot parse"):
        load_distilled(good)
    (good / "meta.json").unlink()
    with pytest.raises(RetaError, match="meta.json: missing"):
        load_distilled(good)
    with pytest.raises(RetaError, match="not a directory"):
        load_distilled(tmp_path / "nope")


def test_load_rejects_bad_soft_labels_and_non_tensor(good):
    torch.save(torch.zeros(6, 4), good / "soft_labels.pt")
    with pytest.raises(RetaError, match=r"soft_labels.pt: expected float32 \[6, 3\]"):
        load_distilled(good)
    (good / "soft_labels.pt").unlink()
    torch.save({"a": 1}, good / "labels.pt")
    with pytest.raises(RetaError, match="labels.pt: expected a tensor"):
        load_distilled(good)
    (good / "images.pt").write_bytes(b"garbage")
    with pytest.raises(RetaError, match="images.pt: cannot load"):
        load_distilled(good)


# ------------------------------------------------------------------------------------------- atomicity


def _boom(*a, **k):
    raise RuntimeError("disk full")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    images, labels, meta, names = make_set()
    monkeypatch.setattr(distilled, "_write_png_tree", _boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_distilled(tmp_path / "out", images, labels, meta, class_names=names)
    assert list(tmp_path.iterdir()) == []


def test_existing_set_survives_failed_overwrite(tmp_path, monkeypatch):
    images, labels, meta, names = make_set(seed=1)
    save_distilled(tmp_path / "out", images, labels, meta, class_names=names)
    new_images, new_labels, new_meta, _ = make_set(seed=2)
    monkeypatch.setattr(distilled, "_write_grid", _boom)
    with pytest.raises(RuntimeError):
        save_distilled(tmp_path / "out", new_images, new_labels, new_meta, class_names=names)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    ds = load_distilled(tmp_path / "out")
    assert torch.equal(ds.images, images) and ds.meta["seed"] == 1
    assert len(list((tmp_path / "out" / "png").rglob("*.png"))) == 6


def test_failed_final_rename_restores_old(tmp_path, monkeypatch):
    images, labels, meta, names = make_set(seed=1)
    save_distilled(tmp_path / "out", images, labels, meta, class_names=names, png=False)
    real_rename = distilled.os.rename
    calls = []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the tmp → out rename
            raise OSError("rename failed")
        return real_rename(src, dst)

    monkeypatch.setattr(distilled.os, "rename", flaky)
    with pytest.raises(OSError):
        save_distilled(tmp_path / "out", *make_set(seed=2)[:3], class_names=names, png=False)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and load_distilled(tmp_path / "out").meta[
        "seed"
    ] == 1


def test_successful_overwrite_replaces(tmp_path):
    images, labels, meta, names = make_set(seed=1)
    save_distilled(tmp_path / "out", images, labels, meta, class_names=names)
    images2, labels2, meta2, _ = make_set(k=3, ipc=1, seed=2)
    save_distilled(tmp_path / "out", images2, labels2, meta2, class_names=names)
    ds = load_distilled(tmp_path / "out")
    assert ds.ipc == 1 and torch.equal(ds.images, images2)
    assert len(list((tmp_path / "out" / "png").rglob("*.png"))) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_out_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    images, labels, meta, names = make_set()
    with pytest.raises(RetaError, match="not a directory"):
        save_distilled(tmp_path / "f", images, labels, meta, class_names=names)


# ------------------------------------------------------------------------------------- utils.io helpers


def test_atomic_write_json(tmp_path):
    p = atomic_write_json(
        tmp_path / "sub" / "m.json", {"a": 1, "b": float("nan"), "p": tmp_path, "t": torch.tensor([1, 2])}
    )
    assert json.loads(p.read_text()) == {"a": 1, "b": None, "p": str(tmp_path), "t": [1, 2]}
    with pytest.raises(TypeError):
        atomic_write_json(p, {"x": object()})
    assert json.loads(p.read_text())["a"] == 1
    assert [q.name for q in p.parent.iterdir()] == ["m.json"]


def test_atomic_torch_save(tmp_path, monkeypatch):
    p = atomic_torch_save({"w": torch.ones(2)}, tmp_path / "c.pt")
    assert torch.equal(torch.load(p, weights_only=True)["w"], torch.ones(2))
    monkeypatch.setattr(torch, "save", _boom)
    with pytest.raises(RuntimeError):
        atomic_torch_save({"w": torch.zeros(2)}, p)
    monkeypatch.undo()
    assert torch.equal(torch.load(p, weights_only=True)["w"], torch.ones(2))
    assert [q.name for q in tmp_path.iterdir()] == ["c.pt"]

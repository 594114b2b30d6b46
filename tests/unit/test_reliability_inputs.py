"""Reliability, second probe: hostile inputs caught without a run (data trees, caches, reports, configs). The table
in docs/reliability.md names these tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reta.data.registry import load_split
from reta.errors import RetaError

from fixtures import write_imagefolder


def folder_cfg(root, num_classes: int = 2, image_size: int = 8) -> dict:
    return {"name": "toy", "format": "imagefolder", "num_classes": num_classes, "image_size": image_size,
            "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3, "class_names": None, "root": str(root)}


# ------------------------------------------------------------------------------------------------ defect 3
def test_a_symlink_loop_in_an_imagefolder_is_refused_not_read_many_times(tmp_path):
    write_imagefolder(tmp_path, classes=("a", "b"), n_train=4, n_val=1)
    assert len(load_split(folder_cfg(tmp_path), "train", None)) == 8
    os.symlink(".", tmp_path / "train" / "a" / "loop")
    with pytest.raises(RetaError, match=r"loop leads back to .*train/a through a directory link") as err:
        load_split(folder_cfg(tmp_path), "train", None)
    assert "\n" not in str(err.value)
    (tmp_path / "train" / "a" / "loop").unlink()
    os.symlink(tmp_path / "train" / "b", tmp_path / "train" / "a" / "twin")  # two ways into one folder
    with pytest.raises(RetaError, match="read more than once"):
        load_split(folder_cfg(tmp_path), "train", None)


def test_a_linked_class_folder_is_still_read_once(tmp_path):
    write_imagefolder(tmp_path / "real", classes=("a", "b"), n_train=3, n_val=1)
    (tmp_path / "tree" / "train").mkdir(parents=True)
    (tmp_path / "tree" / "val").symlink_to(tmp_path / "real" / "val")
    os.symlink(tmp_path / "real" / "train" / "a", tmp_path / "tree" / "train" / "a")  # data kept elsewhere
    os.symlink(tmp_path / "real" / "train" / "b", tmp_path / "tree" / "train" / "b")
    ds = load_split(folder_cfg(tmp_path / "tree"), "train", None)
    assert len(ds) == 6 and ds.targets.tolist() == [0, 0, 0, 1, 1, 1]


# ------------------------------------------------------------------------------------------------ defect 4
def test_the_decode_cache_follows_edited_images_and_never_serves_a_torn_or_foreign_file(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from reta.data import loading

    write_imagefolder(tmp_path / "f", classes=("a", "b"), n_train=3, n_val=1, size=(20, 20))
    cfg = folder_cfg(tmp_path / "f")
    try:
        loading.configure({"num_workers": 0}, None)
        plain = lambda: load_split(cfg, "train", None).gather(torch.arange(6))  # noqa: E731
        loading.configure({"num_workers": 0, "decode_cache": True}, str(tmp_path / "cache"))
        first = load_split(cfg, "train", None).gather(torch.arange(6))
        (npy,) = (tmp_path / "cache" / "decoded").iterdir()
        edited = sorted((tmp_path / "f" / "train" / "a").iterdir())[1]  # image 1, not one of the probed ones
        Image.new("RGB", (20, 20), (255, 0, 255)).save(edited)
        os.utime(edited, ns=(1, 1))  # a new modification time, whatever the clock says
        after = load_split(cfg, "train", None).gather(torch.arange(6))
        loading.configure({"num_workers": 0}, None)
        assert torch.equal(after, plain()) and not torch.equal(after[1], first[1])  # the edit is seen
        loading.configure({"num_workers": 0, "decode_cache": True}, str(tmp_path / "cache"))
        (new,) = set((tmp_path / "cache" / "decoded").iterdir()) - {npy}
        mm = np.load(new, mmap_mode="r+")  # garbage of the right size and shape
        mm[:] = np.random.default_rng(0).integers(0, 256, mm.shape, dtype=np.uint8)
        mm.flush()
        del mm
        assert torch.equal(load_split(cfg, "train", None).gather(torch.arange(6)), after)
        new.write_bytes(new.read_bytes()[:200])  # torn
        assert torch.equal(load_split(cfg, "train", None).gather(torch.arange(6)), after)
    finally:
        loading.configure({"num_workers": 0}, None)


# ------------------------------------------------------------------------------------------------ defect 10
def _png_claiming(path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` × ``height`` pixels (a decompression bomb as PIL sees it)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4))
                     + chunk(b"IEND", b""))


def test_a_png_claiming_30000_squared_pixels_is_one_line(tmp_path):
    write_imagefolder(tmp_path, classes=("a", "b"), n_train=2, n_val=1)
    bomb = sorted((tmp_path / "train" / "a").iterdir())[0]
    _png_claiming(bomb, 30000, 30000)
    ds = load_split(folder_cfg(tmp_path), "train", None)
    with pytest.raises(RetaError, match=f"cannot read image {bomb}: .*decompression bomb"):
        ds.gather([0])


@pytest.mark.parametrize("field,value,match", [
    ("dataset", None, "dataset must be a string"),
    ("ipc", None, "ipc must be a positive integer"),
    ("ipc", 1.5, "ipc must be a positive integer"),
    ("seeds", "0,1", "seeds must be a list of integers"),
    ("sets", [1, 2], "sets must be an object"),
    ("sets", {"random": {"acc_last": ["a"]}}, r"sets.random.acc_last must be a list of numbers"),
])
def test_malformed_metrics_fields_are_one_line_naming_the_file_and_field(tmp_path, field, value, match):
    import json

    from reta.reporting.tables import collect, find_metrics

    m = {"dataset": "fashion_mnist", "ipc": 1, "protocol": "kd", "student": "convnet", "seeds": [0],
         "sets": {"random": {"acc_last": [0.5]}}}
    if value is None:
        m.pop(field)
    else:
        m[field] = value
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(RetaError, match=f"{tmp_path / 'metrics.json'} is not a reta metrics.json: {match}"):
        collect(find_metrics([tmp_path]))
    (tmp_path / "metrics.json").write_text(json.dumps([m]))  # a list, not an object
    with pytest.raises(RetaError, match="is not a reta metrics.json"):
        collect(find_metrics([tmp_path]))


def test_bad_numbers_in_configs_are_one_line(tmp_path):
    from omegaconf import OmegaConf

    from reta.synthesis.frozen.family import spec_for
    from reta.training.common import set_threads

    from helpers import CONF_DIR

    sfm = OmegaConf.to_container(OmegaConf.load(f"{CONF_DIR}/method/sfm.yaml"))  # the YAML holds every default
    sfm.pop("defaults")
    with pytest.raises(RetaError, match=r"lr and augs_per_batch must be finite and > 0 \(got .*nan"):
        spec_for({**sfm, "lr": float("nan")}, 1)
    with pytest.raises(RetaError, match="finite"):
        spec_for({**sfm, "lr": float("inf")}, 1)
    for bad in (-1, 0, 1.5, True):
        with pytest.raises(RetaError, match="num_threads must be a positive integer or null"):
            set_threads(bad)


def test_a_cifar_batch_with_bytes_labels_is_one_line(tmp_path):
    import pickle

    from fixtures import write_cifar10

    write_cifar10(tmp_path / "c", n_per_batch=4, n_test=4)
    batch = tmp_path / "c" / "cifar-10-batches-py" / "data_batch_1"
    d = pickle.loads(batch.read_bytes())
    d[b"labels"] = [str(x).encode() for x in d[b"labels"]]
    batch.write_bytes(pickle.dumps(d, protocol=2))
    cfg = {"name": "cifar10", "format": "cifar10", "num_classes": 10, "image_size": 32, "channels": 3,
           "mean": [0.5] * 3, "std": [0.25] * 3, "class_names": None, "root": str(tmp_path / "c")}
    with pytest.raises(RetaError, match=f"corrupt CIFAR file {batch}: 'labels' must be integers"):
        load_split(cfg, "train", None)


# ------------------------------------------------------------------------------------------------ defect 11
def test_concurrent_teacher_cache_writers_and_readers_never_fail(tmp_path):
    import json
    import threading

    import torch
    from torch import nn

    from reta.training.teacher_cache import read_cache_entry, store_entry

    entry = tmp_path / "teachers" / "fmnist_convnet_abc"
    errors: list[BaseException] = []
    seen: list[str] = []

    def writer(k: int) -> None:
        torch.manual_seed(k)
        model = nn.Linear(4, 2)
        try:
            for _ in range(25):
                store_entry(entry, model, {"test_acc": 0.5, "writer": k})
        except BaseException as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    def reader() -> None:
        try:
            for _ in range(60):
                if entry.is_dir():
                    seen.append(read_cache_entry(entry, nn.Linear(4, 2))["checkpoint_sha256"])
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)] + [
        threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    meta = json.loads((entry / "meta.json").read_text())  # the last writer's entry, complete and consistent
    from reta.training.teacher_cache import _file_sha256

    assert meta["checkpoint_sha256"] == _file_sha256(entry / "model.pt")
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]  # no temporary dirs left


# ------------------------------------------------------------------------------------------------ defect 16
def test_decode_cache_files_are_readable_by_others_like_any_file(tmp_path):
    import numpy as np

    from reta.data.loading import build_decode_cache

    umask = os.umask(0o022)
    try:
        path = build_decode_cache(tmp_path / "c.npy", 2, (1, 2, 2), lambda i: np.zeros((1, 2, 2), np.uint8))
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_16_bit_png_keeps_its_gray_levels(tmp_path):
    import numpy as np
    from PIL import Image

    write_imagefolder(tmp_path, classes=("a", "b"), n_train=1, n_val=1)
    target = sorted((tmp_path / "train" / "a").iterdir())[0]
    levels = np.full((8, 8), 0x4000, dtype=np.uint16)  # a quarter of the 16-bit range
    Image.fromarray(levels).save(target)
    assert Image.open(target).mode.startswith("I")
    x = load_split(folder_cfg(tmp_path), "train", None).gather([0])
    assert abs(float(x.mean()) - 0x40 / 255) < 1e-6  # 64/255, not clipped to white


@pytest.mark.parametrize("value", [1.5, True, "1"])
def test_meta_json_ipc_must_be_an_integer(tmp_path, value):
    import json

    import torch

    from reta.data.distilled import load_distilled, save_distilled

    meta = {"dataset": "toy", "num_classes": 2, "ipc": 1, "mean": [0.5], "std": [0.25], "method": "random", "seed": 0}
    out = save_distilled(tmp_path / "set", torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), meta, class_names=["a", "b"])
    assert load_distilled(out).ipc == 1
    m = json.loads((tmp_path / "set" / "meta.json").read_text())
    m["ipc"] = value
    (tmp_path / "set" / "meta.json").write_text(json.dumps(m))
    with pytest.raises(RetaError, match=r"num_classes and ipc must be integers \(ipc is "):
        load_distilled(tmp_path / "set")


def test_repeated_seeds_are_refused(tmp_path):
    from reta import evaluate

    from helpers import compose_cfg

    cfg = compose_cfg("evaluate", [f"paths.output_dir={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'c'}",
                                   "seeds=[0,0]"])
    with pytest.raises(RetaError, match=r"seeds must be distinct, got \[0, 0\]"):
        evaluate.preflight(cfg, tmp_path / "out")


def test_a_teacher_of_another_model_is_not_replaced_silently(tmp_path):
    import json

    from reta import squeeze

    from helpers import compose_cfg

    out = tmp_path / "out"
    out.mkdir()
    (out / "teacher.json").write_text(json.dumps({"name": "convnet_tiny"}))
    ov = [f"paths.output_dir={out}", f"paths.cache_dir={tmp_path / 'c'}", "model=convnet_d3"]
    with pytest.raises(RetaError, match="already holds the teacher of model convnet_tiny .*overwrite=true"):
        squeeze.preflight(compose_cfg("squeeze", ov), out)
    squeeze.preflight(compose_cfg("squeeze", [*ov, "overwrite=true"]), out)
    squeeze.preflight(compose_cfg("squeeze", [ov[0], ov[1], "model=convnet_tiny"]), out)  # the same model: fine


@pytest.mark.parametrize(("cells", "snapshots", "says"), [
    ("dsa_ipc1 gm_ipc1", "", "unknown cell"), ("dsa_ipc", "", "unknown cell"), ("dm_ipcx", "", "unknown cell"),
    ("dsa", "", "unknown cell"), ("dsa_ipc1", "100,200", "bad SNAPSHOTS entry"), ("dsa_ipc1", "0100", "bad SNAPSHOTS"),
])
def test_the_published_cells_script_refuses_a_bad_cell_before_any_work(tmp_path, cells, snapshots, says):
    """experiments/published/run.sh: an unknown method, a cell without a positive IPC or a snapshot iteration that is
    not a positive integer is one line and exit 2 before the first cell runs and before the output folder exists."""
    script = Path(__file__).resolve().parents[2] / "experiments" / "published" / "run.sh"
    out = tmp_path / "published"
    env = {**os.environ, "CELLS": cells, "SNAPSHOTS": snapshots, "BIN": str(tmp_path)}
    r = subprocess.run(["bash", str(script), str(out)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout.count("\n") == 1 and r.stdout.startswith(says), r.stdout + r.stderr
    assert not out.exists()

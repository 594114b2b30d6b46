"""Pretrained teachers through timm's own mechanism, offline: a locally saved timm- or torchvision-style state dict
is loaded via ``pretrained_file`` (timm's ``pretrained_cfg_overlay=dict(file=…)``) and gives the source's logits;
``teacher.pretrained_file`` makes a teacher that is measured once, cached, and never trained."""

from __future__ import annotations

import json
import socket

import pytest
import timm
import torch
import torchvision

from reta import squeeze
from reta.errors import RetaError
from reta.models import build_model
from reta.training.teacher_cache import entry_teacher_cfg

from fixtures import write_imagefolder
from helpers import compose_cfg


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test (the weights must come from the local file)."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _logits(model, x):
    return model.eval()(x)


def test_timm_state_dict_file_loads_through_the_pretrained_path(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("resnet18.tv_in1k", num_classes=7)
    path = tmp_path / "resnet18_local.pth"
    torch.save(source.state_dict(), path)
    model = build_model({"name": "resnet18.tv_in1k"}, 7, 3, 64, pretrained_file=str(path))
    fresh = build_model({"name": "resnet18.tv_in1k"}, 7, 3, 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(_logits(model, x), _logits(source, x))
        assert not torch.allclose(_logits(fresh, x), _logits(source, x)), "weights were not loaded"


def test_torchvision_state_dict_file_loads_into_timm(tmp_path):
    torch.manual_seed(1)
    source = torchvision.models.resnet18(num_classes=5)
    path = tmp_path / "resnet18-torchvision.pth"
    torch.save(source.state_dict(), path)
    model = build_model({"name": "resnet18.tv_in1k"}, 5, 3, 64, pretrained_file=str(path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(_logits(model, x), _logits(source, x), atol=1e-5)


def test_wrong_head_and_missing_file_fail_in_one_line(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(timm.create_model("resnet18", num_classes=1000).state_dict(), path)
    with pytest.raises(RetaError, match="do not fit"):
        build_model({"name": "resnet18"}, 10, 3, 64, pretrained_file=str(path))
    with pytest.raises(RetaError, match="does not exist"):
        build_model({"name": "resnet18"}, 10, 3, 64, pretrained_file=str(tmp_path / "nope.pth"))
    with pytest.raises(RetaError, match="1000-class head"):  # timm would silently re-initialise the head
        build_model({"name": "resnet18.tv_in1k"}, 10, 3, 64, pretrained=True)


def _folder_cfg(tmp_path, extra):
    root = write_imagefolder(tmp_path / "folder", n_train=2, n_val=2, size=(40, 30), ext="jpg")
    return compose_cfg("squeeze", [
        "dataset=imagenette", f"dataset.root={root}", "dataset.num_classes=3", "dataset.image_size=32",
        f"paths.output_dir={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'cache'}", "logger=none",
        "model=resnet18", "model.name=resnet18.tv_in1k", "progress_bar=false", *extra,
    ])


def test_pretrained_teacher_is_measured_cached_and_not_trained(tmp_path):
    torch.manual_seed(2)
    source = timm.create_model("resnet18.tv_in1k", num_classes=3)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    cfg = _folder_cfg(tmp_path, [f"teacher.pretrained_file={path}", "recipe.epochs=1000"])
    meta = squeeze.run(cfg)
    assert meta["source"] == "pretrained" and meta["weights"] == "file:weights.pth"
    assert 0.0 <= meta["test_acc"] <= 1.0 and "train_seconds" not in meta
    assert str(tmp_path) not in json.dumps(meta), "a machine path leaked into the teacher meta"
    (entry,) = (tmp_path / "cache" / "teachers").iterdir()
    cached = torch.load(entry / "model.pt", weights_only=True)
    assert all(torch.equal(cached[k], v) for k, v in source.state_dict().items())
    mtime = (entry / "model.pt").stat().st_mtime_ns
    again = squeeze.run(cfg)
    assert again["test_acc"] == meta["test_acc"] and (entry / "model.pt").stat().st_mtime_ns == mtime


def test_teacher_list_entries_carry_their_own_weights(tmp_path):
    base = _folder_cfg(tmp_path, ["teacher.pretrained=true", "teacher.checkpoint=run.pt"])
    own = entry_teacher_cfg(base, {"name": "resnet18.tv_in1k", "kwargs": {}})
    assert own.teacher.pretrained and own.teacher.checkpoint == "run.pt"  # the run's own model keeps its file
    other = entry_teacher_cfg(base, {"name": "densenet121.tv_in1k", "kwargs": {}})
    assert other.teacher.pretrained and other.teacher.checkpoint is None and other.model == {
        "name": "densenet121.tv_in1k", "kwargs": {}}
    local = entry_teacher_cfg(base, {"name": "mobilenetv2_100", "pretrained": False, "pretrained_file": "m.pth"})
    assert not local.teacher.pretrained and local.teacher.pretrained_file == "m.pth"
    assert "pretrained_file" not in local.model

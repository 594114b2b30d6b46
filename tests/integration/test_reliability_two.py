"""Reliability, second probe: untrusted sets, damaged caches, full disks, no network, sweeps and plain messages. One
reproduction per defect on the tiny IDX fixture; the table in docs/reliability.md names these tests (preemption:
test_preemption.py)."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from reta import distill
from reta.cli import distill as cli_distill
from reta.data.distilled import load_distilled

from helpers import TINY_SFM, cli, compose_cfg, tiny_fmnist, with_out


@pytest.fixture()
def tiny(tmp_path):
    return tmp_path, tiny_fmnist(tmp_path)


# ------------------------------------------------------------------------------------------------ defect 5
def test_a_pretrained_file_with_nan_weights_is_refused_and_never_cached(tiny):
    from reta import squeeze
    from reta.errors import CheckpointError
    from reta.models.build import build_model

    tmp_path, ov = tiny
    net = build_model({"name": "convnet_tiny"}, 10, 1, 28)
    state = net.state_dict()
    good, bad = tmp_path / "good.pt", tmp_path / "nan.pt"
    torch.save(state, good)
    first = next(k for k, v in state.items() if v.is_floating_point())
    torch.save({**state, first: torch.full_like(state[first], float("nan"))}, bad)
    with pytest.raises(CheckpointError, match=f"pretrained_file {bad} holds NaN/inf weights .*{first}") as err:
        squeeze.run(compose_cfg("squeeze", [*ov, f"teacher.pretrained_file={bad}"]))
    assert "\n" not in str(err.value)
    teachers = tmp_path / "cache" / "teachers"
    assert not teachers.exists() or list(teachers.iterdir()) == []
    meta = squeeze.run(compose_cfg("squeeze", [*ov, f"teacher.pretrained_file={good}"]))  # a reta ConvNet file loads
    assert meta["source"] == "pretrained"
    (entry,) = teachers.iterdir()
    cached = torch.load(entry / "model.pt", weights_only=True)
    assert all(torch.equal(cached[k], v) for k, v in state.items())


# ------------------------------------------------------------------------------------------------ defect 6
PROBE = ["protocol=linear_probe", "protocol.epochs=2", "protocol.projector_steps=2", "seeds=[0]"]


def test_an_untrusted_set_names_its_backbone_but_never_chooses_what_is_built(tiny, monkeypatch):
    import json

    from reta import evaluate
    from reta.errors import RetaError
    from reta.training import backbone as backbone_module

    tmp_path, ov = tiny
    made = distill.run(compose_cfg("distill", [*ov, *TINY_SFM]))["distilled"]
    meta_path = tmp_path / "out" / "distilled" / "meta.json"
    meta = json.loads(meta_path.read_text())
    honest_key = meta["backbone"]["key"]
    meta["backbone"]["config"]["ssl"] = {"steps": 1_000_000_000}  # what the set asks to be built
    meta["backbone"]["config"]["source"] = "timm"
    meta["backbone"]["config"]["checkpoint"] = "/etc/shadow"
    meta["backbone"]["config"]["model"] = {"name": "resnet18.tv_in1k"}
    meta["backbone"]["config"]["pretrained"] = True
    meta_path.write_text(json.dumps(meta))
    built = []
    real_get = backbone_module.get_backbone

    def recording_get(cfg, train=None, test=None, spec=None):
        built.append(spec)
        return real_get(cfg, train, test, spec)

    monkeypatch.setattr(backbone_module, "get_backbone", recording_get)
    source = ["+backbone@source_backbone=random", "source_backbone.model.kwargs.depth=2",
              "source_backbone.model.kwargs.width=8"]  # the settings the set was made with, from the user
    ev = [*ov, *PROBE, f"distilled={made}", "protocol.inherit=true", "backbone.seed=1", *source]  # cross-backbone
    m = evaluate.run(compose_cfg("evaluate", with_out(ev, tmp_path / "ev")))
    assert {s.source for s in built if s is not None} == {"random"} and all(
        s.checkpoint is None and not s.pretrained for s in built if s is not None)
    assert m["inherited_from"]["backbone_key"] == honest_key and "distilled_inherited" in m["sets"]
    meta["backbone"]["key"] = "0123456789ab"  # a set whose recorded key no configured backbone gives
    meta_path.write_text(json.dumps(meta))

    def no_work(*a, **k):
        raise AssertionError("data loaded before the set was refused")

    monkeypatch.setattr(evaluate, "load_split", no_work)
    with pytest.raises(RetaError, match=r"made for backbone random 0123456789ab, but source_backbone gives random .*"
                                        r"\+backbone@source_backbone=random") as err:
        evaluate.run(compose_cfg("evaluate", with_out(ev, tmp_path / "ev2")))
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ defect 7
@pytest.mark.parametrize("damage", ["meta_missing", "meta_corrupt", "stats_truncated", "golden_truncated",
                                    "golden_json_corrupt"])
def test_a_damaged_backbone_cache_is_one_line_naming_the_entry_and_the_way_out(tiny, damage):
    from reta.data.registry import load_split
    from reta.errors import RetaError
    from reta.synthesis.frozen.statistics import real_statistics
    from reta.training.backbone import get_backbone
    from reta.training.probe import GoldenSpec, golden_head

    tmp_path, ov = tiny
    simclr = ["backbone=simclr", "backbone.ssl.steps=2", "backbone.ssl.batch_size=16"] if "meta" in damage else []
    cfg = compose_cfg("evaluate", [*ov, *simclr])
    train, test = load_split(cfg.dataset, "train", None), load_split(cfg.dataset, "test", None)
    spec = GoldenSpec(epochs=1, batch_size=32)
    bb = get_backbone(cfg, train, test)
    real_statistics(bb, train, 10)
    golden_head(bb, train, test, 10, spec, {"accelerator": "cpu"})
    entry = bb.entry
    target = {"meta_missing": "meta.json", "meta_corrupt": "meta.json", "stats_truncated": "sfm_stats_80.pt",
              "golden_truncated": "golden_*.pt", "golden_json_corrupt": "golden_*.json"}[damage]
    (path,) = entry.glob(target)
    if damage == "meta_missing":
        path.unlink()
    elif damage.endswith("corrupt"):
        path.write_text("{not json")
    else:
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RetaError, match=f"cache entry {entry} is damaged: {path.name} .*delete {entry}") as err:
        bb = get_backbone(cfg, train, test)
        real_statistics(bb, train, 10)
        golden_head(bb, train, test, 10, spec, {"accelerator": "cpu"})
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ defect 8
def test_a_full_disk_at_write_time_is_one_line_and_keeps_the_old_set(tiny, monkeypatch):
    import errno

    from reta.errors import RetaError

    tmp_path, ov = tiny
    base = [*ov, "method=random", "ipc=1"]
    first = load_distilled(distill.run(compose_cfg("distill", base))["distilled"])
    real_save = torch.save

    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RetaError, match=r"cannot write .*distilled: No space left on device; nothing half-written "
                                        r"was left \(distilled keeps its previous version\)") as err:
        distill.run(compose_cfg("distill", [*base, "seed=1", "overwrite=true"]))
    monkeypatch.setattr(torch, "save", real_save)
    assert "\n" not in str(err.value)
    assert torch.equal(load_distilled(tmp_path / "out" / "distilled").images, first.images)
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")) == []  # no temp dirs


def test_a_read_only_cache_is_refused_before_the_teacher_is_trained(tiny, monkeypatch):
    import errno
    import tempfile

    from reta import squeeze
    from reta.errors import RetaError
    from reta.training import teacher_cache

    tmp_path, ov = tiny
    real = tempfile.mkdtemp

    (tmp_path / "cache").mkdir()

    def read_only_cache(*a, dir=None, **k):  # as a read-only mount answers root too
        if str(dir) == str(tmp_path / "cache"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*a, dir=dir, **k)

    def no_work(*a, **k):
        raise AssertionError("the teacher was trained before the cache was checked")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only_cache)
    monkeypatch.setattr(teacher_cache, "get_teacher", no_work)
    with pytest.raises(RetaError, match=r"cannot write to .*paths.cache_dir .*Read-only file system.*"
                                        r"choose another paths.cache_dir"):
        squeeze.run(compose_cfg("squeeze", ov))


# ------------------------------------------------------------------------------------------------ defect 9
def test_wandb_logs_offline_when_its_server_does_not_answer(tmp_path, monkeypatch, caplog):
    pytest.importorskip("wandb")
    import socket

    from reta.training.common import build_logger

    asked = []

    def unreachable(address, timeout=None, *a, **k):  # no real network call in the suite
        asked.append((address, timeout))
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    cfg = dict(compose_cfg("squeeze", ["logger=wandb"]).logger)
    with caplog.at_level(logging.WARNING):
        logger = build_logger(cfg, str(tmp_path), "squeeze")
    assert asked == [(("api.wandb.ai", 443), 3.0)]
    assert logger._offline and "W&B server unreachable (api.wandb.ai:443 Network is unreachable)" in caplog.text
    asked.clear()
    logger = build_logger({**cfg, "offline_when_unreachable": 0}, str(tmp_path), "squeeze")
    assert asked == [] and not logger._offline  # 0: never asked, online as configured


def test_a_hub_backbone_without_network_is_one_line(tiny, monkeypatch):
    import timm
    from huggingface_hub.errors import LocalEntryNotFoundError

    from reta.errors import RetaError
    from reta.training.backbone import get_backbone

    tmp_path, ov = tiny

    def offline(*a, pretrained=False, **k):
        if pretrained:
            raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing traffic "
                                          "has been disabled.")
        raise AssertionError("built without its weights")

    monkeypatch.setattr(timm, "create_model", offline)
    cfg = compose_cfg("evaluate", [o for o in ov if not o.startswith("backbone")] + ["backbone=dinov2_vitb"])
    with pytest.raises(RetaError, match=r"backbone dinov2_vitb: cannot fetch the pretrained weights of "
                                        r"vit_base_patch14_dinov2.lvd142m \(LocalEntryNotFoundError\).*"
                                        r"backbone.checkpoint=FILE") as err:
        get_backbone(cfg)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ defect 12
def test_debug_fast_runs_the_frozen_family_through_the_linear_probe(tiny, monkeypatch, capsys):
    import json

    from reta.cli import pipeline as cli_pipeline

    tmp_path, ov = tiny
    code, errors, err = cli(cli_pipeline, [*ov, *TINY_SFM, "debug=fast", "protocol.projector_steps=2"], monkeypatch,
                            capsys)
    assert code in (0, None) and errors == [], err[-2000:]
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["protocol"] == "linear_probe" and m["seeds"] == [0] and m["protocol_config"]["epochs"] == 2


# ------------------------------------------------------------------------------------------------ defect 13
def test_a_failing_sweep_job_does_not_stop_the_others_and_is_reported_at_the_end(tiny, monkeypatch, capsys):
    from hydra.core.hydra_config import HydraConfig

    tmp_path, ov = tiny
    sweep = tmp_path / "sweep"
    args = ["-m", f"hydra.sweep.dir={sweep}", *[o for o in ov if not o.startswith("paths.output_dir=")],
            "method=random", "ipc=1,0,2"]
    try:
        code, errors, err = cli(cli_distill, args, monkeypatch, capsys)
    finally:
        HydraConfig.instance().cfg = None  # the in-process app must not leak its config into later tests
    assert code == 2, err[-2000:]
    assert load_distilled(sweep / "0" / "distilled").ipc == 1
    assert load_distilled(sweep / "2" / "distilled").ipc == 2  # the job after the failed one ran
    assert not (sweep / "1" / "distilled").exists()
    assert errors[0].startswith("error: sweep job 1: ipc must be a positive integer")
    assert errors[-1].startswith("error: 1 of 3 sweep jobs failed: job 1 (ipc=0); their errors are above")
    assert len(errors) == 2


# ------------------------------------------------------------------------------------------------ defect 15
def test_a_misspelt_nested_key_is_one_line_naming_the_valid_keys_and_exit_2(tiny, monkeypatch, capsys):
    tmp_path, ov = tiny
    code, errors, err = cli(cli_distill, [*ov, "method=sfm", "method.iteratons=3"], monkeypatch, capsys)
    assert code == 2 and len(errors) == 1, err[-2000:]
    assert errors[0].startswith("error: unknown key 'method.iteratons'; valid: ") and "iterations" in errors[0]
    assert "+method.iteratons=3" in errors[0] and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_map_value_with_an_unknown_key_names_that_key_and_how_to_replace_the_map(tiny, monkeypatch, capsys):
    tmp_path, ov = tiny
    code, errors, err = cli(cli_distill, [*ov, "method=sfm", "method.iterations=3", "model.kwargs={patch_size:4}"],
                            monkeypatch, capsys)
    assert code == 2 and len(errors) == 1, err[-2000:]
    assert errors[0].startswith("error: unknown key 'model.kwargs.patch_size'; valid: ")
    assert "~model.kwargs +model.kwargs={patch_size:4}" in errors[0] and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_an_image_error_in_a_dataloader_worker_is_the_worker_line_not_its_traceback(tmp_path):
    from reta.data import loading
    from reta.data.registry import load_split
    from reta.errors import RetaError
    from reta.training.teacher import train_loader

    from fixtures import write_imagefolder

    write_imagefolder(tmp_path, classes=("a", "b"), n_train=2, n_val=1)
    bad = sorted((tmp_path / "train" / "a").iterdir())[0]
    bad.write_bytes(b"not an image")
    cfg = {"name": "toy", "format": "imagefolder", "num_classes": 2, "image_size": 8, "channels": 3,
           "mean": [0.5] * 3, "std": [0.25] * 3, "class_names": None, "root": str(tmp_path)}
    ds = load_split(cfg, "train", None)
    try:
        loading.configure({"num_workers": 1, "persistent_workers": False}, None)
        with pytest.raises(RetaError) as err:
            list(train_loader(ds, 4, seed=0))
    finally:
        loading.configure({"num_workers": 0}, None)
    msg = str(err.value)
    assert msg.startswith(f"cannot read image {bad}: ") and msg.endswith("(in DataLoader worker process 0)")
    assert "Traceback" not in msg and len(msg) < 400


@pytest.mark.parametrize("damage", ["pickled_code", "truncated"])
def test_a_bad_weight_file_is_named_plainly(tmp_path, damage):
    from reta.errors import CheckpointError
    from reta.models.build import build_model

    path = tmp_path / "w.pt"
    good = build_model({"name": "convnet_tiny"}, 10, 1, 28).state_dict()
    torch.save(good, path)
    if damage == "pickled_code":
        class Payload:
            def __reduce__(self):
                return (os.system, ("echo pwned > " + str(tmp_path / "ran"),))

        torch.save({"w": Payload()}, path)
        want = r"holds pickled Python objects \(posix.system\), which reta refuses to load"
    else:
        path.write_bytes(path.read_bytes()[:-100])
        want = "could not be read: the file is truncated or corrupt"
    for name in ("convnet_tiny", "resnet18"):  # a reta model and a timm one
        with pytest.raises(CheckpointError, match=want) as err:
            build_model({"name": name}, 10, 1 if name == "convnet_tiny" else 3, 28, pretrained_file=str(path))
        assert "weights_only=False" not in str(err.value) and "Errno" not in str(err.value)
    assert not (tmp_path / "ran").exists()

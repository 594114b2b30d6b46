"""Tiny end-to-end squeeze + evaluate on an IDX fixture, teacher caching, and the bad-input contract."""

from __future__ import annotations

import json

import pytest
import torch

from reta import evaluate, squeeze
from reta.cli import evaluate as cli_evaluate
from reta.cli import squeeze as cli_squeeze
from reta.data.distilled import save_distilled
from reta.errors import CheckpointError, DatasetNotFoundError, RetaError

from fixtures import write_idx_dataset
from helpers import cli, compose_cfg, run_cli, tiny_overrides


@pytest.fixture()
def tiny(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    return tmp_path, tiny_overrides(tmp_path, root)


def test_squeeze_trains_caches_and_reuses(tiny):
    tmp_path, ov = tiny
    meta = squeeze.run(compose_cfg("squeeze", ov))
    assert 0.0 <= meta["test_acc"] <= 1.0 and meta["recipe"]["epochs"] == 1
    entries = list((tmp_path / "cache" / "teachers").iterdir())
    assert len(entries) == 1 and (entries[0] / "model.pt").is_file()
    assert json.loads((tmp_path / "out" / "teacher.json").read_text())["test_acc"] == meta["test_acc"]
    mtime = (entries[0] / "model.pt").stat().st_mtime_ns
    again = squeeze.run(compose_cfg("squeeze", ov))
    assert again["test_acc"] == meta["test_acc"]
    assert (entries[0] / "model.pt").stat().st_mtime_ns == mtime, "cached teacher was retrained"
    other = squeeze.run(compose_cfg("squeeze", [*ov, "recipe.lr=0.02"]))
    assert other["key"] != meta["key"]
    assert len(list((tmp_path / "cache" / "teachers").iterdir())) == 2


@pytest.mark.parametrize("protocol", ["kd", "hard", "dc"])
def test_evaluate_random_and_distilled(tiny, protocol):
    tmp_path, ov = tiny
    ev = [*ov, f"protocol={protocol}", "model@student=convnet_tiny", "protocol.epochs=2", "protocol.eval_every=1",
          "protocol.batch_size=8", "ipc=2", "seeds=[0,1]"]
    # a "distilled" set: the first two training images of each class, in format v1
    cfg = compose_cfg("evaluate", ev)
    from reta.data.registry import load_split, sample_per_class

    train = load_split(cfg.dataset, "train", None)
    idx = sample_per_class(train.targets, 10, 2, seed=123)
    meta = {"dataset": "fashion_mnist", "num_classes": 10, "ipc": 2, "mean": [0.286], "std": [0.353],
            "method": "test", "seed": 0}
    save_distilled(
        tmp_path / "dset", train.gather(idx), train.targets[idx], meta, class_names=list(cfg.dataset.class_names)
    )
    m = evaluate.run(compose_cfg("evaluate", [*ev, f"distilled={tmp_path / 'dset'}"]))
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written == json.loads(json.dumps(m))
    assert set(m["sets"]) == {"random", "distilled"}
    for s in m["sets"].values():
        assert len(s["acc_last"]) == 2 and len(s["acc_best"]) == 2
        assert all(0.0 <= a <= 1.0 for a in s["acc_last"])
        assert all(b >= a for a, b in zip(s["acc_last"], s["acc_best"]))
        assert s["acc_mean"] == pytest.approx(sum(s["acc_last"]) / 2)
    assert m["protocol"] == protocol and m["ipc"] == 2
    if protocol == "kd":
        assert m["teacher"]["name"] == "convnet_tiny" and m["teacher"]["test_acc"] is not None
    else:
        assert m["teacher"]["name"] is None


def test_evaluate_is_deterministic(tiny):
    tmp_path, ov = tiny
    ev = [*ov, "protocol=kd", "model@student=convnet_tiny", "protocol.epochs=1", "protocol.eval_every=1", "ipc=1",
          "seeds=[3]"]
    a = evaluate.run(compose_cfg("evaluate", ev))
    with pytest.raises(RetaError, match=r"already holds a finished evaluation \(metrics.json\); pass overwrite=true"):
        evaluate.run(compose_cfg("evaluate", ev))  # never replaced silently
    b = evaluate.run(compose_cfg("evaluate", [*ev, "overwrite=true", "baseline_cache=false"]))  # trained again
    assert a["sets"]["random"]["cached"] == [False] and "cached" not in b["sets"]["random"]
    assert a["sets"]["random"]["acc_last"] == b["sets"]["random"]["acc_last"]


def test_bad_inputs_raise_one_line_errors(tiny, tmp_path):
    _, ov = tiny
    with pytest.raises(RetaError, match="ipc must be a positive integer"):
        evaluate.run(compose_cfg("evaluate", [*ov, "ipc=0"]))
    with pytest.raises(DatasetNotFoundError, match="dataset-fashion-mnist|IDX|fashion"):
        squeeze.run(compose_cfg("squeeze", [*ov, f"dataset.root={tmp_path / 'nowhere'}"]))
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read"):
        squeeze.run(compose_cfg("squeeze", [*ov, f"teacher.checkpoint={bad}"]))
    wrong = tmp_path / "wrong_classes.pt"
    import timm

    torch.save(timm.create_model("convnet_tiny", num_classes=7, in_chans=1, img_size=28).state_dict(), wrong)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        squeeze.run(compose_cfg("squeeze", [*ov, f"teacher.checkpoint={wrong}"]))
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_checkpoint_file_is_used_instead_of_training(tiny, tmp_path):
    _, ov = tiny
    import timm

    path = tmp_path / "given.pt"
    torch.save(timm.create_model("convnet_tiny", num_classes=10, in_chans=1, img_size=28).state_dict(), path)
    meta = squeeze.run(compose_cfg("squeeze", [*ov, f"teacher.checkpoint={path}"]))
    assert meta["source"] == str(path) and len(meta["checkpoint_sha256"]) == 16
    assert not (tmp_path / "cache" / "teachers").exists()


def test_cli_one_line_errors_and_exit_codes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"

    def run(module, args):
        return cli(module, args, monkeypatch, capsys, cwd=tmp_path)

    code, errors, err = run(cli_evaluate, ["dataset=fmnist", f"paths.output_dir={out}"])
    assert code == 2 and len(errors) == 1 and "valid:" in err
    assert "fashion_mnist" in err and not out.exists()
    code, errors, err = run(cli_evaluate, ["protocol=soft", f"paths.output_dir={out}"])
    assert code == 2 and "valid: " in err and "hard, kd" in err
    code, errors, err = run(cli_squeeze, ["model=resnet_9000", f"paths.output_dir={out}"])
    assert code == 2 and "unknown model" in err
    code, errors, err = run(cli_evaluate, ["ipc=-1", f"paths.output_dir={out}", "logger=none"])
    assert code == 2 and errors == ["error: ipc must be a positive integer, got -1"]
    assert not (out / "metrics.json").exists()
    code, errors, err = run(cli_squeeze, ["dataset=cifar10", f"paths.data_dir={tmp_path / 'empty'}",
                                          f"paths.output_dir={out}", "logger=none"])
    assert code == 2 and len(errors) == 1 and "cifar10" in err
    assert "Traceback" not in err


@pytest.mark.slow  # console-script subprocess
def test_cli_output_dir_override(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=False)
    out = tmp_path / "mine"
    proc = run_cli("reta-squeeze", [*tiny_overrides(tmp_path, root)[:1], f"paths.output_dir={out}",
                                    f"paths.cache_dir={tmp_path / 'cache'}", "model=convnet_tiny", "recipe.epochs=1",
                                    "progress_bar=false"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "teacher.json").is_file() and (out / ".hydra" / "config.yaml").is_file()
    assert (out / "logs").is_dir()  # csv logger writes under the run dir
    assert not (tmp_path / "outputs").exists()

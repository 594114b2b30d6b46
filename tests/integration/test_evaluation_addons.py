"""Evaluation add-ons end to end on a tiny IDX fixture: the cached full-data student (sets.full), the
corruption-robustness scores of every student, and the class-incremental protocol (protocol=continual)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reta import evaluate
from reta.data.distilled import save_distilled
from reta.errors import RetaError

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides


@pytest.fixture()
def tiny(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    ov = tiny_overrides(tmp_path, root)
    return tmp_path, [*ov, "protocol=hard", "model@student=convnet_tiny", "protocol.epochs=2",
                      "protocol.eval_every=1", "protocol.batch_size=8", "ipc=1", "seeds=[0,1]"]


def _toy_set(tmp_path):
    """A "distilled" set in format v1: one training image per class."""
    from reta.data.registry import load_split, sample_per_class

    cfg = compose_cfg("evaluate", tiny_overrides(tmp_path, tmp_path / "fmnist"))
    train = load_split(cfg.dataset, "train", None)
    idx = sample_per_class(train.targets, 10, 1, seed=123)
    meta = {"dataset": "fashion_mnist", "num_classes": 10, "ipc": 1, "mean": [0.286], "std": [0.353],
            "method": "test", "seed": 0}
    save_distilled(tmp_path / "dset", train.gather(idx), train.targets[idx], meta,
                   class_names=list(cfg.dataset.class_names))
    return tmp_path / "dset"


def test_full_data_student_is_trained_once_and_cached(tiny):
    tmp_path, ev = tiny
    m = evaluate.run(compose_cfg("evaluate", [*ev, "full_data.enabled=true", "full_data.epochs=1"]))
    assert set(m["sets"]) == {"random", "full"} and len(m["sets"]["full"]["acc_last"]) == 1
    entries = list((tmp_path / "cache" / "full_data").glob("*.json"))
    assert len(entries) == 1
    stored = json.loads(entries[0].read_text())
    assert stored["key"]["protocol"]["epochs"] == 1 and stored["key"]["seed"] == 0
    mtime = entries[0].stat().st_mtime_ns
    again = evaluate.run(compose_cfg("evaluate", [*ev, "full_data.enabled=true", "full_data.epochs=1",
                                                  "overwrite=true"]))
    assert again["sets"]["full"]["acc_last"] == m["sets"]["full"]["acc_last"]
    assert entries[0].stat().st_mtime_ns == mtime, "the cached full-data student was retrained"
    evaluate.run(compose_cfg("evaluate", [*ev, "full_data.enabled=true", "full_data.epochs=2", "overwrite=true"]))
    assert len(list((tmp_path / "cache" / "full_data").glob("*.json"))) == 2  # another recipe, another entry


def test_full_data_alone_is_an_evaluation(tiny):
    tmp_path, ev = tiny
    m = evaluate.run(compose_cfg("evaluate", [*ev, "baseline=false", "full_data.enabled=true", "full_data.epochs=1"]))
    assert set(m["sets"]) == {"full"}
    with pytest.raises(RetaError, match="nothing to evaluate"):
        evaluate.run(compose_cfg("evaluate", [*ev, "baseline=false", "overwrite=true"]))


def test_robustness_adds_per_corruption_accuracy_and_mca_for_every_set(tiny):
    tmp_path, ev = tiny
    rob = ["robustness.enabled=true", "robustness.corruptions=[gaussian_noise,contrast]", "robustness.severities=[1,5]"]
    m = evaluate.run(compose_cfg("evaluate", [*ev, *rob, "distilled=" + str(_toy_set(tmp_path))]))
    for name in ("random", "distilled"):
        r = m["sets"][name]["robustness"]
        assert r["severities"] == [1, 5] and set(r["per_corruption"]) == {"gaussian_noise", "contrast"}
        n_seeds = len(m["sets"][name]["acc_last"])
        for pc in r["per_corruption"].values():
            assert len(pc["acc_mean"]) == 2 and len(pc["per_seed"]) == n_seeds
            assert all(0.0 <= a <= 1.0 for a in pc["acc_mean"])
        cells = [a for pc in r["per_corruption"].values() for a in pc["acc_mean"]]
        assert r["mca"] == pytest.approx(sum(cells) / len(cells))
    assert len(list((tmp_path / "cache" / "corruptions" / "fashion_mnist").iterdir())) == 4
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["sets"]["random"]["robustness"]["mca"] == pytest.approx(m["sets"]["random"]["robustness"]["mca"])


def test_an_unknown_corruption_is_refused_before_anything_is_written(tiny):
    tmp_path, ev = tiny
    with pytest.raises(RetaError, match="unknown corruption.*valid: gaussian_noise"):
        evaluate.run(compose_cfg("evaluate", [*ev, "robustness.enabled=true", "robustness.corruptions=[rain]"]))
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_an_addon_under_a_protocol_without_student_addons_is_refused(tiny):
    tmp_path, ev = tiny
    ev = [o for o in ev if not o.startswith("protocol=")]
    with pytest.raises(RetaError, match=r"^robustness\.enabled=true: protocol continual trains no students that take"):
        evaluate.run(compose_cfg("evaluate", [*ev, "protocol=continual", "robustness.enabled=true"]))
    with pytest.raises(RetaError, match=r"^protocol\.student_addons: missing"):
        evaluate.run(compose_cfg("evaluate", [*ev, "protocol=hard", "~protocol.student_addons"]))
    assert not (tmp_path / "out").exists()


def test_continual_protocol_writes_steps_for_the_set_and_an_equal_random_buffer(tiny):
    tmp_path, ev = tiny
    ev = [o for o in ev if not o.startswith("protocol=")]
    m = evaluate.run(compose_cfg("evaluate", [*ev, "protocol=continual", f"distilled={_toy_set(tmp_path)}",
                                              "protocol.epochs=1"]))
    assert m["protocol"] == "continual" and set(m["sets"]) == {"random", "distilled"}
    for s in m["sets"].values():
        steps = s["steps"]
        assert [r["n_classes"] for r in steps] == [2, 4, 6, 8, 10]
        assert [r["memory_size"] for r in steps] == [2, 4, 6, 8, 10]  # IPC 1: one image per seen class
        assert all(len(r["acc_last"]) == 2 and 0.0 <= r["acc_mean"] <= 1.0 for r in steps)
        assert s["acc_last"] == steps[-1]["acc_last"]
        assert steps[0]["classes"][1][:2] == [int(c) for c in np.random.RandomState(1).permutation(10)[:2]]
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["sets"]["distilled"]["steps"][2]["n_classes"] == 6


def test_continual_with_kd_students_uses_a_masked_teacher(tiny):
    tmp_path, ev = tiny
    ev = [o for o in ev if not o.startswith("protocol=")]
    m = evaluate.run(compose_cfg("evaluate", [*ev, "protocol=continual_kd", "protocol.epochs=1",
                                              "protocol.continual.steps=2", "seeds=[0]"]))
    assert m["teacher"]["name"] == "convnet_tiny" and m["protocol"] == "continual_kd"
    assert m["protocol_config"]["labels"] == "teacher" and m["protocol_config"]["continual"]["steps"] == 2
    assert [r["n_classes"] for r in m["sets"]["random"]["steps"]] == [5, 10]


def test_cli_refuses_a_set_whose_classes_do_not_match_the_step_split(tiny, monkeypatch, capsys):
    from reta.cli import evaluate as evaluate_cli

    from helpers import cli, with_out

    tmp_path, ev = tiny
    ev = [o for o in ev if not o.startswith("protocol=")]
    out = tmp_path / "cli_out"
    code, errors, _ = cli(evaluate_cli, [*with_out(ev, out), "protocol=continual", f"distilled={_toy_set(tmp_path)}",
                                         "protocol.continual.class_order=[0,1,2,3,4,5,6,7]"], monkeypatch, capsys)
    assert code == 2
    assert errors == ["error: protocol.continual.class_order [0, 1, 2, 3, 4, 5, 6, 7] is not a permutation of the "
                      "set's 10 classes 0..9"]
    assert not out.exists()  # refused in preflight (the evaluator's own check): not even Hydra's run record is written
    probe = [o for o in with_out(ev, out) if not o.startswith(("protocol.eval_every", "protocol.batch_size"))]
    code, errors, _ = cli(evaluate_cli, [*probe, "protocol=linear_probe", "robustness.enabled=true"], monkeypatch,
                          capsys)
    assert code == 2 and len(errors) == 1 and "trains no students that take add-ons" in errors[0]
    assert not out.exists()

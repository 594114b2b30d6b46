"""baseline_cache: the random subset's student of one recipe is trained once; every later evaluation of the same
recipe (another method's job of a table grid) reads it, and any change to the recipe trains a new one."""

from __future__ import annotations

import json

import pytest
import torch

from reta import evaluate
from reta.data.distilled import save_distilled
from reta.errors import RetaError

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides


@pytest.fixture()
def tiny(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    ov = [*tiny_overrides(tmp_path, root), "model@student=convnet_tiny", "protocol=kd", "protocol.epochs=1",
          "protocol.eval_every=1", "ipc=1", "seeds=[0,1]"]
    return tmp_path, ov


def _set(path, fill):
    save_distilled(path, torch.full((10, 1, 28, 28), fill), torch.arange(10),
                   {"dataset": "fashion_mnist", "num_classes": 10, "ipc": 1, "method": f"m{fill}",
                    "mean": [0.286], "std": [0.353], "seed": 0},
                   class_names=[str(c) for c in range(10)])
    return path


def entries(tmp_path):
    return sorted((tmp_path / "cache" / "random_students").glob("*.json"))


def test_random_students_are_trained_once_per_recipe(tiny):
    tmp_path, ov = tiny
    a = evaluate.run(compose_cfg("evaluate", [*ov, f"distilled={_set(tmp_path / 'a', 0.2)}",
                                              f"paths.output_dir={tmp_path / 'ea'}"]))
    assert a["sets"]["random"]["cached"] == [False, False] and len(entries(tmp_path)) == 2  # one per seed
    stamps = [e.stat().st_mtime_ns for e in entries(tmp_path)]
    # another method's set, same recipe: the random students are read back, the set's own are trained
    b = evaluate.run(compose_cfg("evaluate", [*ov, f"distilled={_set(tmp_path / 'b', 0.7)}",
                                              f"paths.output_dir={tmp_path / 'eb'}"]))
    assert b["sets"]["random"]["cached"] == [True, True]
    assert b["sets"]["random"]["acc_last"] == a["sets"]["random"]["acc_last"]
    assert [e.stat().st_mtime_ns for e in entries(tmp_path)] == stamps
    assert "cached" not in b["sets"]["distilled"]
    written = json.loads((tmp_path / "eb" / "metrics.json").read_text())
    assert written["sets"]["random"]["acc_last"] == a["sets"]["random"]["acc_last"]
    # a seed more: only the new seed's student is trained
    c = evaluate.run(compose_cfg("evaluate", [*ov, "seeds=[0,1,2]", f"paths.output_dir={tmp_path / 'ec'}"]))
    assert c["sets"]["random"]["cached"] == [True, True, False] and len(entries(tmp_path)) == 3


@pytest.mark.parametrize("change", ["protocol.epochs=2", "ipc=2", "protocol=hard", "robustness.enabled=true",
                                    "trainer.precision=bf16-mixed", "recipe.lr=0.02"])
def test_a_changed_recipe_trains_a_new_random_student(tiny, change):
    tmp_path, ov = tiny
    ov = [*ov, "seeds=[0]"]
    evaluate.run(compose_cfg("evaluate", [*ov, f"paths.output_dir={tmp_path / 'e1'}"]))
    if change == "robustness.enabled=true":  # a tiny corruption set: two corruptions, one severity
        change = [change, "robustness.corruptions=[gaussian_noise,contrast]", "robustness.severities=[1]"]
    m = evaluate.run(compose_cfg("evaluate", [*ov, *([change] if isinstance(change, str) else change),
                                              f"paths.output_dir={tmp_path / 'e2'}"]))
    assert m["sets"]["random"]["cached"] == [False] and len(entries(tmp_path)) == 2


def test_the_continual_random_buffer_is_trained_once_per_recipe(tiny):
    tmp_path, ov = tiny
    ov = [o for o in ov if not o.startswith("protocol")] + ["protocol=continual", "protocol.epochs=1",
                                                             "protocol.continual.steps=2", "seeds=[0]"]
    a = evaluate.run(compose_cfg("evaluate", [*ov, f"paths.output_dir={tmp_path / 'c1'}"]))
    assert len(entries(tmp_path)) == 1
    stamp = entries(tmp_path)[0].stat().st_mtime_ns
    b = evaluate.run(compose_cfg("evaluate", [*ov, f"paths.output_dir={tmp_path / 'c2'}"]))
    assert (a["sets"]["random"]["cached"], b["sets"]["random"]["cached"]) == ([False], [True])
    strip = [{k: v for k, v in r.items() if k != "cached"} for r in b["sets"]["random"]["steps"]]
    assert strip == [{k: v for k, v in r.items() if k != "cached"} for r in a["sets"]["random"]["steps"]]
    assert entries(tmp_path)[0].stat().st_mtime_ns == stamp
    evaluate.run(compose_cfg("evaluate", [*ov, "protocol.continual.steps=5", f"paths.output_dir={tmp_path / 'c3'}"]))
    assert len(entries(tmp_path)) == 2  # another step split, another buffer run


def test_refresh_trains_again_and_replaces_the_entry_and_a_bad_mode_is_refused(tiny):
    tmp_path, ov = tiny
    ov = [*ov, "seeds=[0]"]
    evaluate.run(compose_cfg("evaluate", [*ov, f"paths.output_dir={tmp_path / 'r1'}"]))
    stamp = entries(tmp_path)[0].stat().st_mtime_ns
    m = evaluate.run(compose_cfg("evaluate", [*ov, "baseline_cache=refresh", f"paths.output_dir={tmp_path / 'r2'}"]))
    assert m["sets"]["random"]["cached"] == [False] and entries(tmp_path)[0].stat().st_mtime_ns != stamp
    with pytest.raises(RetaError, match=r"baseline_cache must be true, false or refresh, got 'maybe'"):
        evaluate.run(compose_cfg("evaluate", [*ov, "baseline_cache=maybe", f"paths.output_dir={tmp_path / 'r3'}"]))
    assert not (tmp_path / "r3").exists()

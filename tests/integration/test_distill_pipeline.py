"""reta-run: squeeze (cached) → distill → evaluate with the random baseline → results table, on a tiny fixture."""

from __future__ import annotations

import json

from reta import evaluate, pipeline

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides


def test_pipeline_chains_the_stages_and_writes_a_results_table(tmp_path, capsys):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    ov = [*tiny_overrides(tmp_path, root), "method=fadrm", "ipc=2", "method.stages.sizes=[28,28]",
          "method.stages.budgets=[2,2]", "method.init.mipc=4", "method.init.num_crop=1", "model@student=convnet_tiny",
          "protocol.epochs=1", "protocol.eval_every=1", "protocol.batch_size=8", "seeds=[0]", "seed=3",
          "+teacher.seed=0"]
    r = pipeline.run(compose_cfg("pipeline", ov))
    out = tmp_path / "out"
    for name in ("teacher.json", "metrics.json", "results.md", "results.json", "distilled/grid.png",
                 "distilled/meta.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["sets"]) == {"random", "distilled"} and metrics["method"] == "fadrm" and metrics["ipc"] == 2
    assert [row["set"] for row in r["rows"]] == ["teacher (convnet_tiny)", "random real subset", "fadrm"]
    table = (out / "results.md").read_text()
    assert "| random real subset |" in table and "| fadrm |" in table
    printed = capsys.readouterr().out
    assert (
        f"grid image: {out / 'distilled' / 'grid.png'}" in printed and f"metrics:    {out / 'metrics.json'}" in printed
    )
    # teacher.seed=0 decouples the teacher from the run seed: one cached teacher, distilled with seed 3
    assert len(list((tmp_path / "cache" / "teachers").iterdir())) == 1
    assert json.loads((out / "distilled" / "meta.json").read_text())["seed"] == 3


def test_evaluate_with_stored_soft_labels_matches_online(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    ov = [*tiny_overrides(tmp_path, root), "model@student=convnet_tiny", "protocol=kd", "protocol.epochs=2",
          "protocol.eval_every=1", "protocol.batch_size=8", "ipc=2", "seeds=[0]"]
    online = evaluate.run(compose_cfg("evaluate", ov))
    stored = evaluate.run(compose_cfg("evaluate", [*ov, "protocol.soft_labels=stored", "overwrite=true"]))
    assert stored["sets"]["random"]["acc_last"] == online["sets"]["random"]["acc_last"]
    store = tmp_path / "out" / "soft_labels" / "random_seed0"
    assert (
        json.loads((store / "meta.json").read_text())["epochs"] == 2 and (store / "epoch_0001" / "logits.npy").is_file()
    )


def test_holdout_split_keeps_held_out_images_out_of_the_set_and_measures_on_them(tmp_path):
    import pytest
    import torch

    from reta.data.distilled import load_distilled
    from reta.data.holdout import holdout_indices
    from reta.data.registry import load_split
    from reta.errors import RetaError

    root = write_idx_dataset(tmp_path / "fmnist", n_train=80, n_test=30, classes=10, gz=True)
    ov = [*tiny_overrides(tmp_path, root), "method=random", "ipc=4", "model@student=convnet_tiny", "protocol=hard",
          "protocol.epochs=1", "protocol.eval_every=1", "protocol.batch_size=8", "seeds=[0]", "holdout_per_class=4"]
    pipeline.run(compose_cfg("pipeline", ov))
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_split"] == "holdout4"
    ds = load_distilled(out / "distilled")
    assert ds.meta["holdout_per_class"] == 4
    cfg = compose_cfg("pipeline", ov)
    train = load_split(cfg.dataset, "train", cfg.paths.data_dir)
    held = train.gather(holdout_indices(train.targets, 10, 4))
    rest = [i for i in range(len(train)) if i not in set(holdout_indices(train.targets, 10, 4).tolist())]
    # every distilled image is a non-held-out training image (ipc 4 of the 4 left per class: all of them)
    flat = lambda x: {tuple((x[i] * 255).round().to(torch.uint8).flatten().tolist()) for i in range(len(x))}  # noqa: E731
    assert flat(ds.images) == flat(train.gather(rest)) and not flat(ds.images) & flat(held)
    # a set made without the split cannot be evaluated on it (it may contain held-out images); nothing is written
    ov2 = [o for o in ov if not o.startswith("holdout")] + [f"paths.output_dir={tmp_path / 'plain'}"]
    pipeline.run(compose_cfg("pipeline", ov2))
    ev = [*(o for o in ov2[:-1] if not o.startswith("method")), f"paths.output_dir={tmp_path / 'ev'}",
          f"distilled={tmp_path / 'plain' / 'distilled'}", "holdout_per_class=4", "baseline=false"]
    with pytest.raises(RetaError, match="may contain held-out images"):
        evaluate.run(compose_cfg("evaluate", ev))
    assert not (tmp_path / "ev" / "metrics.json").exists()

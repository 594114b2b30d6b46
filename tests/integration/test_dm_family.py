"""DM / DM+IID / IDM / IDM+IID end to end on a tiny IDX fixture: reta.distill.run writes a valid set, IPC-1 inertness,
IDM's stored mosaics expand at evaluation, the IID pool lands in the teacher cache, resume reproduces a straight run."""

from __future__ import annotations

import json

import pytest
import torch

from reta import distill, evaluate
from reta.cli import distill as cli_distill
from reta.data.distilled import load_distilled
from reta.data.expansion import training_view
from reta.errors import RetaError
from reta.synthesis.dm import matcher as dm_matcher

from fixtures import write_idx_dataset
from helpers import cli, compose_cfg, tiny_overrides

# ConvNet-2 width 8 embedder, 4 real images per class per iteration, 3 iterations: seconds, not minutes
SMALL = ["method.iterations=3", "method.batch_real=4", "method.embedder.kwargs.depth=2",
         "method.embedder.kwargs.width=8", "method.log_every=1", "method.checkpoint_every=1"]
TINY_POOL = ["method.iid.pool.size=1",
             "method.iid.pool.model={name: convnet, kwargs: {depth: 2, width: 8, norm: instance}}",
             "method.iid.pool.recipe={optimizer: sgd, lr: 0.01, momentum: 0.9, weight_decay: 0.0, batch_size: 32, "
             "epochs: 1, schedule: constant, crop_pad: 0, rrc_scale_min: 0.0, flip: false}"]
TINY_QUEUE = ["method.queue.initial=1", "method.queue.capacity=3", "method.queue.push_every=2",
              "method.queue.train_steps=1", "method.queue.batch=16"]


@pytest.fixture()
def tiny(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=80, n_test=20, classes=10, gz=False)
    return tmp_path, tiny_overrides(tmp_path, root)


def distill_cfg(ov, *extra):
    return compose_cfg("distill", [*ov, *extra])


def test_dm_writes_a_valid_set_that_moved_from_its_init(tiny):
    tmp_path, ov = tiny
    res = distill.run(distill_cfg(ov, "method=dm", "ipc=2", *SMALL))
    ds = load_distilled(res["distilled"])
    assert ds.images.shape == (20, 1, 28, 28) and ds.labels.tolist() == [c for c in range(10) for _ in range(2)]
    m = ds.meta
    assert m["method"] == "dm" and m["variant"] == "dm" and m["expansion"] == "none" and m["iterations"] == 3
    assert [r["iteration"] for r in m["loss_history"]] == [1, 2, 3]
    assert all(r["match"] > 0 for r in m["loss_history"])
    assert not (tmp_path / "out" / "checkpoints" / "last.ckpt").exists(), "finished runs leave no checkpoint"
    from reta.data.registry import load_split

    train = load_split(compose_cfg("distill", ov).dataset, "train", None)
    init = train.gather(torch.tensor(m["init_indices"]))
    assert (ds.images - init).abs().max() > 1e-3, "DM did not move the images"


def test_iid_terms_at_ipc1_are_inert_warned_and_equal_dm(tiny):
    tmp_path, ov = tiny
    dm = load_distilled(distill.run(distill_cfg(ov, "method=dm", "ipc=1", *SMALL,
                                                "paths.output_dir=" + str(tmp_path / "dm")))["distilled"])
    with pytest.warns(RuntimeWarning, match="inert"):
        res = distill.run(distill_cfg(ov, "method=dm_iid", "ipc=1", *SMALL, *TINY_POOL,
                                      "paths.output_dir=" + str(tmp_path / "iid")))
    iid = load_distilled(res["distilled"])
    assert iid.meta["iid"]["inert"] and not iid.meta["iid"]["cm_active"] and not iid.meta["iid"]["cc_active"]
    assert torch.equal(iid.images, dm.images), "DM+IID at IPC 1 must be exactly DM"
    assert not (tmp_path / "cache" / "teachers").exists(), "an inert L_CC must not train a pool"


def test_dm_iid_trains_its_pool_into_the_teacher_cache(tiny):
    tmp_path, ov = tiny
    res = distill.run(distill_cfg(ov, "method=dm_iid", "ipc=2", *SMALL, *TINY_POOL))
    meta = load_distilled(res["distilled"]).meta
    assert meta["iid"]["cm_active"] and meta["iid"]["cc_active"] and not meta["iid"]["inert"]
    assert all("cm" in r and "cc" in r for r in meta["loss_history"])
    (member,) = meta["iid"]["pool"]
    entries = list((tmp_path / "cache" / "teachers").iterdir())
    assert [e.name for e in entries] == [member["key"]] and (entries[0] / "model.pt").is_file()
    assert json.loads((entries[0] / "meta.json").read_text())["recipe"]["flip"] is False
    assert meta["teacher_seconds"] > 0  # the pool's squeeze is timed as teacher time, not as synthesis


def test_idm_stores_mosaics_and_evaluation_expands_them(tiny):
    tmp_path, ov = tiny
    res = distill.run(distill_cfg(ov, "method=idm_iid", "ipc=1", *SMALL, *TINY_POOL, *TINY_QUEUE))
    ds = load_distilled(res["distilled"])
    m = ds.meta
    assert ds.images.shape == (10, 1, 28, 28) and m["ipc"] == 1 and m["expansion"] == "quadrants"
    assert m["iid"]["cm_active"] and m["iid"]["cc_active"], "with the x4 expansion IID works at IPC 1"
    assert all("ce" in r for r in m["loss_history"])
    images, labels = training_view(ds.images, ds.labels, m)
    assert images.shape == (40, 1, 28, 28) and labels.tolist() == [c for c in range(10) for _ in range(4)]
    ev = [*ov, "protocol=hard", "model@student=convnet_tiny", "protocol.epochs=1", "protocol.eval_every=1",
          "seeds=[0]", f"distilled={res['distilled']}", "paths.output_dir=" + str(tmp_path / "eval")]
    metrics = evaluate.run(compose_cfg("evaluate", ev))
    assert (
        metrics["expansion"] == "quadrants" and metrics["ipc"] == 1 and set(metrics["sets"]) == {"random", "distilled"}
    )
    assert metrics["synthesis_iterations"] == m["iterations"]  # the budget the set ran (reta-report published=)


def test_resume_continues_to_the_same_images(tiny, monkeypatch):
    tmp_path, ov = tiny
    args = ["method=idm", "ipc=1", *SMALL, *TINY_QUEUE, "method.iterations=4", "method.checkpoint_every=2"]
    straight = load_distilled(
        distill.run(distill_cfg(ov, *args, "paths.output_dir=" + str(tmp_path / "a")))["distilled"]
    )

    real_step = dm_matcher.DistributionMatcher.step

    def crash_at_3(self):
        if self.iteration == 3:
            raise RuntimeError("killed")  # a stand-in for a killed process (Lightning turns Ctrl-C into exit 1)
        return real_step(self)

    out_b = "paths.output_dir=" + str(tmp_path / "b")
    monkeypatch.setattr(dm_matcher.DistributionMatcher, "step", crash_at_3)
    with pytest.raises(RuntimeError, match="killed"):
        distill.run(distill_cfg(ov, *args, out_b))
    assert (tmp_path / "b" / "checkpoints" / "last.ckpt").is_file()
    monkeypatch.setattr(dm_matcher.DistributionMatcher, "step", real_step)
    with pytest.raises(RetaError, match="different configuration"):
        distill.run(distill_cfg(ov, *args, out_b, "resume=true", "method.lr=0.3"))
    resumed = load_distilled(distill.run(distill_cfg(ov, *args, out_b, "resume=true"))["distilled"])
    assert resumed.meta["resumed_from_iteration"] == 2
    assert torch.equal(resumed.images, straight.images)


def test_dm_runs_under_lightning_with_csv_metrics_and_bf16(tiny):
    """The DM family is a LightningModule: logger=csv writes Lightning's metrics.csv with the loss terms, and
    trainer.precision=bf16-mixed reaches the step (the embedder's features are bfloat16 inside it)."""
    tmp_path, ov = tiny
    ov = [o for o in ov if not o.startswith("logger=")]
    res = distill.run(
        distill_cfg(ov, "method=dm", "ipc=1", *SMALL, "logger=csv", "paths.output_dir=" + str(tmp_path / "c"))
    )
    rows = (tmp_path / "c" / "logs" / "distill" / "metrics.csv").read_text().splitlines()
    assert "dm/match" in rows[0] and len(rows) == 1 + 3  # header + one row per logged iteration
    assert res["precision"] == "32-true" and res["feature_dtype"] == "float32"
    bf16 = distill.run(distill_cfg(ov, "method=dm", "ipc=1", *SMALL, "logger=none", "trainer.precision=bf16-mixed",
                                   "paths.output_dir=" + str(tmp_path / "d")))
    assert bf16["precision"] == "bf16-mixed" and bf16["feature_dtype"] == "bfloat16"
    assert load_distilled(bf16["distilled"]).images.dtype == torch.float32  # the set format is unchanged


def test_a_wrong_type_on_the_command_line_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    code, errors, err = cli(cli_distill, ["method=idm", "method.queue.lr=abc", f"paths.output_dir={out}",
                                          "logger=none"], monkeypatch, capsys, cwd=tmp_path)
    assert code == 2, err[-2000:]
    assert errors == ["error: method.queue.lr: Value 'abc' of type 'str' could not be converted to Float"]
    assert not (out / "distilled").exists() and not (out / "checkpoints").exists()

"""Budget snapshots (``reta-distill snapshots=[…]``, reta.synthesis.snapshots): one run writes the set after chosen
iterations as complete sets; a snapshot equals a run stopped there, the final set is unchanged by them, and a method
that writes its set only at the end, or an iteration outside the run, is refused with one line before any work."""

from __future__ import annotations

import pytest
import torch

from reta import distill, evaluate
from reta.cli import distill as cli_distill
from reta.data.distilled import load_distilled

from fixtures import write_idx_dataset
from helpers import cli, compose_cfg, tiny_overrides

DC = ["method=dc", "ipc=1", "method.batch_real=4", "method.net.kwargs.depth=2", "method.net.kwargs.width=8",
      "method.outer_loop=2", "method.inner_loop=1", "method.batch_train=8", "method.log_every=1"]
DM = ["method=dm", "ipc=1", "method.batch_real=4", "method.embedder.kwargs.depth=2", "method.embedder.kwargs.width=8",
      "method.log_every=1"]


@pytest.fixture()
def tiny(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=20, classes=10, gz=False)
    return tmp_path, tiny_overrides(tmp_path, root)


def _run(ov, args, out):
    return load_distilled(distill.run(compose_cfg("distill", [*ov, *args, f"paths.output_dir={out}"]))["distilled"])


@pytest.mark.parametrize("family", [DC, DM], ids=["dc", "dm"])
def test_a_snapshot_is_the_run_stopped_there_and_leaves_the_final_set_alone(tiny, family):
    tmp_path, ov = tiny
    final = _run(ov, [*family, "method.iterations=3", "snapshots=[2,1]"], tmp_path / "a")
    snaps = {n: load_distilled(tmp_path / "a" / "snapshots" / f"it{n}" / "distilled") for n in (1, 2)}
    assert sorted(p.name for p in (tmp_path / "a" / "snapshots").iterdir()) == ["it1", "it2"]
    for n, s in snaps.items():
        assert (s.meta["iterations"], s.meta["snapshot_of"], len(s.meta["loss_history"])) == (n, 3, n)
        assert s.meta["method"] == final.meta["method"] and s.meta["seed"] == final.meta["seed"]
    assert final.meta["iterations"] == 3 and "snapshot_of" not in final.meta
    assert torch.equal(final.images, _run(ov, [*family, "method.iterations=3"], tmp_path / "b").images)
    stopped = _run(ov, [*family, "method.iterations=2"], tmp_path / "c")
    assert torch.equal(snaps[2].images, stopped.images)
    assert not torch.equal(snaps[1].images, snaps[2].images)


def test_a_snapshot_is_evaluated_as_a_set_with_its_own_budget(tiny):
    tmp_path, ov = tiny
    _run(ov, [*DC, "method.iterations=2", "snapshots=[1]"], tmp_path / "a")
    ev = [*ov, "protocol=hard", "model@student=convnet_tiny", "protocol.epochs=1", "protocol.eval_every=1",
          "seeds=[0]", "baseline=false", f"distilled={tmp_path / 'a' / 'snapshots' / 'it1' / 'distilled'}",
          f"paths.output_dir={tmp_path / 'eval'}"]
    metrics = evaluate.run(compose_cfg("evaluate", ev))
    assert metrics["method"] == "dc" and metrics["synthesis_iterations"] == 1
    assert metrics["synthesis_scale"] == "paper"
    assert metrics["label"] == "dc_it1", "a snapshot's students get their own row, apart from the final set's"


def test_an_earlier_runs_snapshots_are_never_mixed_into_a_new_run(tiny, monkeypatch):
    from reta.errors import RetaError
    from reta.synthesis.process import gradient

    tmp_path, ov = tiny
    real_step = gradient.GradientMatcher.step

    def crash_at_2(self):
        if self.iteration == 2:
            raise RuntimeError("killed")
        return real_step(self)

    monkeypatch.setattr(gradient.GradientMatcher, "step", crash_at_2)  # a run without checkpoints, killed
    with pytest.raises(RuntimeError, match="killed"):
        _run(ov, [*DC, "method.iterations=3", "method.checkpoint_every=0", "snapshots=[1]"], tmp_path / "a")
    monkeypatch.setattr(gradient.GradientMatcher, "step", real_step)
    assert [p.name for p in (tmp_path / "a" / "snapshots").iterdir()] == ["it1"]
    with pytest.raises(RetaError, match=r"interrupted run \(checkpoints/ or snapshots/\)"):
        _run(ov, [*DC, "method.iterations=3", "method.lr_img=50"], tmp_path / "a")
    _run(ov, [*DC, "method.iterations=3", "snapshots=[2]", "overwrite=true"], tmp_path / "a")
    assert [p.name for p in (tmp_path / "a" / "snapshots").iterdir()] == ["it2"]


@pytest.mark.parametrize(("args", "says"), [
    (["method=rded", "snapshots=[1]"], "error: snapshots=[1]: method rded writes its set only at the end"),
    (["method=dc", "method.iterations=3", "snapshots=[3]"], "error: snapshots=[3]: each must be below"),
    (["method=dc", "snapshots=[0,5]"], "error: snapshots must be a list of positive iteration counts"),
    (["method=dc", "snapshots=100"], "error: snapshots must be a list of positive iteration counts"),
])
def test_bad_snapshots_one_line_exit_2(tmp_path, monkeypatch, capsys, args, says):
    out = tmp_path / "out"
    code, errors, err = cli(cli_distill, [*args, f"paths.output_dir={out}", "logger=none"], monkeypatch, capsys,
                            cwd=tmp_path)
    assert code == 2, err[-2000:]
    (error,) = errors
    assert error.startswith(says), error
    assert not out.exists() or not any(out.iterdir())

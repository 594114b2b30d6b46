"""DC / DSA end to end on a tiny IDX fixture: reta.distill.run writes a valid set, resume after a kill reproduces a
straight run, and bad method keys fail with one line (exit 2) before anything is written."""

from __future__ import annotations

import pytest
import torch

from reta import distill, evaluate
from reta.cli import distill as cli_distill
from reta.data.distilled import load_distilled, save_distilled
from reta.errors import RetaError
from reta.synthesis.process import gradient

from fixtures import write_idx_dataset
from helpers import cli, compose_cfg, tiny_overrides

# ConvNet-2 width 8, 4 real images per class, 3 iterations of 2 outer x 1 inner loops: seconds
SMALL = ["method.iterations=3", "method.batch_real=4", "method.net.kwargs.depth=2", "method.net.kwargs.width=8",
         "method.outer_loop=2", "method.inner_loop=1", "method.batch_train=8", "method.log_every=1",
         "method.checkpoint_every=1"]


@pytest.fixture()
def tiny(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=20, classes=10, gz=False)
    return tmp_path, tiny_overrides(tmp_path, root)


@pytest.mark.parametrize("method", ["dc", "dsa"])
def test_gradient_matching_writes_a_set_that_moved(tiny, method):
    tmp_path, ov = tiny
    res = distill.run(compose_cfg("distill", [*ov, f"method={method}", "ipc=2", *SMALL]))
    ds = load_distilled(res["distilled"])
    assert ds.images.shape == (20, 1, 28, 28) and ds.labels.tolist() == [c for c in range(10) for _ in range(2)]
    m = ds.meta
    assert m["method"] == method and m["iterations"] == 3 and m["loops"] == {"outer": 2, "inner": 1}
    assert [r["iteration"] for r in m["loss_history"]] == [1, 2, 3]
    assert all(r["match"] > 0 for r in m["loss_history"])
    assert m["siamese_dsa"] is (method == "dsa")
    assert not (tmp_path / "out" / "checkpoints" / "last.ckpt").exists()
    if method == "dsa":  # real init: the images left their initial real images
        from reta.data.registry import load_split

        train = load_split(compose_cfg("distill", ov).dataset, "train", None)
        assert (ds.images - train.gather(torch.tensor(m["init_indices"]))).abs().max() > 1e-3
    else:
        assert "init_indices" not in m
    again = load_distilled(distill.run(compose_cfg("distill", [*ov, f"method={method}", "ipc=2", *SMALL,
                                                               "overwrite=true"]))["distilled"])
    assert torch.equal(again.images, ds.images), "a seeded run is not deterministic"


def test_dc_resume_after_a_kill_gives_the_same_images(tiny, monkeypatch):
    tmp_path, ov = tiny
    args = ["method=dc", "ipc=1", *SMALL, "method.iterations=4", "method.checkpoint_every=2"]
    straight = load_distilled(distill.run(compose_cfg("distill", [*ov, *args,
                                                                  f"paths.output_dir={tmp_path / 'a'}"]))["distilled"])
    real_step = gradient.GradientMatcher.step

    def crash_at_3(self):
        if self.iteration == 3:
            raise RuntimeError("killed")
        return real_step(self)

    out_b = f"paths.output_dir={tmp_path / 'b'}"
    monkeypatch.setattr(gradient.GradientMatcher, "step", crash_at_3)
    with pytest.raises(RuntimeError, match="killed"):
        distill.run(compose_cfg("distill", [*ov, *args, out_b]))
    assert (tmp_path / "b" / "checkpoints" / "last.ckpt").is_file()
    monkeypatch.setattr(gradient.GradientMatcher, "step", real_step)
    with pytest.raises(RetaError, match="different configuration"):
        distill.run(compose_cfg("distill", [*ov, *args, out_b, "resume=true", "method.lr_img=0.3"]))
    # the output clamp, logging and checkpoint cadence are not part of the optimisation: a resume may change them
    resumed = load_distilled(distill.run(compose_cfg("distill", [*ov, *args, out_b, "resume=true",
                                                                 "method.clamp_output=true", "method.log_every=2",
                                                                 "method.checkpoint_every=3"]))["distilled"])
    assert resumed.meta["resumed_from_iteration"] == 2 and "clamped" not in resumed.meta
    assert torch.equal(resumed.images, straight.images.clamp(0, 1))


def test_dc_keeps_the_optimised_pixels_unclamped_and_students_train_on_them(tiny):
    """DC starts from noise in normalised space (about a fifth of the pixels outside [0, 1]) and, as its reference,
    is evaluated on the tensor it optimised, not a clamped copy."""
    tmp_path, ov = tiny
    ds = load_distilled(distill.run(compose_cfg("distill", [*ov, "method=dc", "ipc=1", *SMALL]))["distilled"])
    assert ds.meta["clamped"] is False and 0.05 < ds.meta["out_of_range_fraction"] < 0.5
    assert float(ds.images.min()) < 0 and float(ds.images.max()) > 1
    m = evaluate.run(compose_cfg("evaluate", [*ov, "protocol=hard", "protocol.epochs=1", "protocol.eval_every=1",
                                              "model@student=convnet_tiny", "ipc=1", "seeds=[0]", "baseline=false",
                                              f"distilled={tmp_path / 'out' / 'distilled'}",
                                              f"paths.output_dir={tmp_path / 'ev'}"]))
    assert 0.0 <= m["sets"]["distilled"]["acc_last"][0] <= 1.0
    meta = {k: v for k, v in ds.meta.items() if k != "clamped"}  # the same images claimed to be in [0, 1]
    with pytest.raises(RetaError, match=r"outside \[0, 1\] \(clamp before saving, or record meta.json clamped: false"):
        save_distilled(tmp_path / "bad", ds.images, ds.labels, meta)


@pytest.mark.parametrize(("arg", "line"), [
    ("+method.outer_lop=2", "error: method: unknown key"),
    ("method.distance=l1", "error: method.distance 'l1'; valid: ours, mse, cos"),
    ("+method.dsa.strategy=blur", "error: method.dsa: unknown DSA op(s)"),
    ("method.lr_img=abc", "error: method.lr_img: Value 'abc'"),
])
def test_bad_method_keys_one_line_exit_2(tmp_path, monkeypatch, capsys, arg, line):
    out = tmp_path / "out"
    code, errors, err = cli(cli_distill, ["method=dc", arg, f"paths.output_dir={out}", "logger=none"], monkeypatch,
                            capsys, cwd=tmp_path)
    assert code == 2, err[-2000:]
    (error,) = errors
    assert error.startswith(line), error
    assert not (out / "distilled").exists() and not (out / "checkpoints").exists()

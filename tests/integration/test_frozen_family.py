"""LGM / SFM end to end on a tiny IDX fixture: reta.distill.run writes a set that records its backbone, the SFM real
statistics are computed once and then read from the cache, resume after a kill reproduces a straight run, the
linear-probe protocol writes metrics.json with sets.full, refuses a set made for another backbone in one line (CLI),
classifier inheritance on the same backbone is the golden probe, and SimCLR backbones are cached."""

from __future__ import annotations

import json

import pytest
import torch

from reta import distill, pipeline
from reta.cli import evaluate as cli_evaluate
from reta.data.distilled import load_distilled
from reta.data.registry import load_split
from reta.errors import RetaError
from reta.synthesis.frozen import module as frozen_module
from reta.synthesis.frozen.statistics import real_statistics
from reta.training.backbone import get_backbone
from reta.training.probe import (
    GoldenSpec,
    ProbeSpec,
    eval_features,
    golden_head,
    inherited_accuracy,
    learn_projector,
)

from fixtures import write_idx_dataset
from helpers import cli, compose_cfg, tiny_overrides

TINY_BACKBONE = ["backbone=random", "backbone.model.kwargs.depth=2", "backbone.model.kwargs.width=8",
                 "backbone.probe.epochs=2", "backbone.probe.batch_size=32", "backbone.probe.holdout=0.25"]
SMALL = ["method.iterations=4", "method.extent_every=2", "method.log_every=1", "method.checkpoint_every=2"]
PROBE = ["protocol.epochs=3", "protocol.projector_steps=3"]


@pytest.fixture()
def tiny(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=80, n_test=20, classes=10, gz=False)
    return tmp_path, [*tiny_overrides(tmp_path, root), *TINY_BACKBONE]


def test_sfm_set_records_its_backbone_and_statistics_are_cached(tiny):
    tmp_path, ov = tiny
    first = load_distilled(distill.run(compose_cfg("distill", [*ov, "method=sfm", "ipc=1", *SMALL,
                                                              f"paths.output_dir={tmp_path / 'a'}"]))["distilled"])
    m = first.meta
    assert first.images.shape == (10, 1, 28, 28) and float(first.images.min()) >= 0 and float(first.images.max()) <= 1
    assert m["backbone"]["name"] == "random" and len(m["backbone"]["key"]) == 12
    assert m["real_statistics"]["from_cache"] is False and m["real_statistics"]["num_images"] == 80
    assert [r["step"] for r in m["loss_history"]] == [1, 2, 3, 4] and all(
        0 <= r["loss"] <= 2 for r in m["loss_history"])
    second = load_distilled(distill.run(compose_cfg("distill", [*ov, "method=sfm", "ipc=1", *SMALL,
                                                               f"paths.output_dir={tmp_path / 'b'}"]))["distilled"])
    assert second.meta["real_statistics"]["from_cache"] is True
    assert torch.equal(first.images, second.images), "same seed, same set"


def test_real_statistics_cache_hit_runs_no_backbone_pass(tiny):
    tmp_path, ov = tiny
    cfg = compose_cfg("distill", [*ov, "method=sfm"])
    train = load_split(cfg.dataset, "train", cfg.paths.data_dir)
    bb = get_backbone(cfg, train)
    calls = []
    bb.register_forward_hook(lambda *a: calls.append(1))
    st1 = real_statistics(bb, train, 10)
    n_first = len(calls)
    st2 = real_statistics(bb, train, 10)
    assert n_first > 0 and len(calls) == n_first and not st1.from_cache and st2.from_cache
    assert st1.sums.dtype == torch.float64 and torch.equal(st1.sums, st2.sums) and st1.counts.tolist() == [8.0] * 10


def test_lgm_resume_after_a_kill_gives_the_same_images(tiny, monkeypatch):
    tmp_path, ov = tiny
    args = [*ov, "method=lgm", "ipc=1", *SMALL, "method.augs_per_batch=2"]
    straight = load_distilled(
        distill.run(compose_cfg("distill", [*args, f"paths.output_dir={tmp_path / 'a'}"]))["distilled"])
    real_step = frozen_module.FrozenSynthesisModule.training_step

    def crash_at_3(self, batch, batch_idx):
        if self.step_index == 3:
            raise RuntimeError("killed")
        return real_step(self, batch, batch_idx)

    out_b = f"paths.output_dir={tmp_path / 'b'}"
    monkeypatch.setattr(frozen_module.FrozenSynthesisModule, "training_step", crash_at_3)
    with pytest.raises(RuntimeError, match="killed"):
        distill.run(compose_cfg("distill", [*args, out_b]))
    assert (tmp_path / "b" / "checkpoints" / "last.ckpt").is_file()
    monkeypatch.setattr(frozen_module.FrozenSynthesisModule, "training_step", real_step)
    with pytest.raises(RetaError, match="different configuration \\(method changed\\)"):
        distill.run(compose_cfg("distill", [*args, out_b, "resume=true", "method.lr=0.1"]))
    resumed = load_distilled(distill.run(compose_cfg("distill", [*args, out_b, "resume=true"]))["distilled"])
    assert resumed.meta["resumed_from_step"] == 2
    assert torch.equal(resumed.images, straight.images)


def test_pipeline_sfm_defaults_to_the_linear_probe_and_reports_full_random_distilled(tiny):
    tmp_path, ov = tiny
    cfg = compose_cfg("pipeline", [*ov, "method=sfm", "ipc=1", "seeds=[0,1]", *SMALL, *PROBE])
    assert cfg.protocol.name == "linear_probe"
    res = pipeline.run(cfg)
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert (m["protocol"] == "linear_probe" and m["method"] == "sfm"
            and set(m["sets"]) == {"full", "random", "distilled"})
    assert len(m["sets"]["distilled"]["acc_last"]) == 2 and m["golden"]["epoch"] in (1, 2)
    assert m["backbone"]["key"] == m["backbone"]["made_for_key"]
    assert res["rows"][0]["acc_mean"] == m["sets"]["full"]["acc_mean"]
    assert not (tmp_path / "cache" / "teachers").exists(), "no teacher is trained for the frozen family"


def test_probe_refuses_a_set_made_for_another_backbone_in_one_line(tiny, monkeypatch, capsys):
    tmp_path, ov = tiny
    res = distill.run(compose_cfg("distill", [*ov, "method=sfm", "ipc=1", *SMALL]))
    code, lines, err = cli(cli_evaluate, [*ov, "protocol=linear_probe", f"distilled={res['distilled']}",
                                          "backbone.seed=1", f"paths.output_dir={tmp_path / 'ev'}", *PROBE],
                           monkeypatch, capsys, cwd=tmp_path)
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and "was made for backbone random" in lines[0] and "cross_backbone" in lines[0]
    assert not (tmp_path / "ev" / "metrics.json").exists()
    with pytest.raises(RetaError, match=r"method: unknown keys \['iteratons'\]; valid: "):
        distill.run(compose_cfg("distill", [*ov, "method=sfm", "ipc=1", "+method.iteratons=3"]))


def test_classifier_inheritance_on_the_same_backbone_is_the_golden_probe(tiny):
    tmp_path, ov = tiny
    cfg = compose_cfg("evaluate", [*ov, "protocol=linear_probe"])
    train, test = load_split(cfg.dataset, "train", None), load_split(cfg.dataset, "test", None)
    bb = get_backbone(cfg, train, test)
    head, rec = golden_head(bb, train, test, 10, GoldenSpec(epochs=2, batch_size=32, holdout=0.25),
                            {"accelerator": "cpu"})
    again, rec2 = golden_head(bb, train, test, 10, GoldenSpec(epochs=2, batch_size=32, holdout=0.25),
                              {"accelerator": "cpu"})
    assert rec2["from_cache"] and torch.equal(head.weight, again.weight) and rec["epoch"] in (1, 2)
    images = train.gather(torch.arange(10))
    spec = ProbeSpec(projector_steps=300, projector_batch=10)
    r = inherited_accuracy(bb, head, bb, images, test, spec, 0, {"accelerator": "cpu"})
    assert r["acc_last"] == rec["test_acc"]
    # a projector learnt between a backbone and itself is close to the identity on held-out features
    spec = ProbeSpec(projector_steps=300, projector_batch=80)
    proj = learn_projector(bb, bb, train.gather(torch.arange(80)), spec, 0, {"accelerator": "cpu"}, force=True)
    z = eval_features(bb, test)
    with torch.no_grad():
        rel = (proj(z) - z).norm() / z.norm()
        agree = (head(proj(z)).argmax(1) == head(z).argmax(1)).float().mean()
    assert float(rel) < 0.2 and float(agree) >= 0.8


def test_simclr_backbone_is_trained_once_and_cached(tiny):
    tmp_path, ov = tiny
    cfg = compose_cfg("evaluate", [*ov, "backbone=simclr", "backbone.model.kwargs.depth=2",
                                   "backbone.model.kwargs.width=8", "backbone.ssl.steps=2",
                                   "backbone.ssl.batch_size=16"])
    train = load_split(cfg.dataset, "train", None)
    a = get_backbone(cfg, train)
    entry = a.entry
    assert (entry / "model.pt").is_file() and json.loads((entry / "meta.json").read_text())["ssl_result"]["steps"] == 2
    b = get_backbone(cfg, train)
    assert all(torch.equal(p, q) for p, q in zip(a.net.state_dict().values(), b.net.state_dict().values()))
    fresh = compose_cfg("evaluate", [*ov, "backbone=random", "backbone.model.kwargs.depth=2",
                                     "backbone.model.kwargs.width=8"])
    assert any(not torch.equal(p, q) for p, q in zip(a.net.state_dict().values(),
                                                      get_backbone(fresh, train).net.state_dict().values()))


def test_holdout_split_is_disjoint_seeded_and_the_golden_heads_held_out_part(tiny):
    tmp_path, ov = tiny
    from reta.training.probe import holdout_split

    train = load_split(compose_cfg("evaluate", ov).dataset, "train", None)
    fit, val = holdout_split(train, GoldenSpec(holdout=0.25, seed=3))
    again, _ = holdout_split(train, GoldenSpec(holdout=0.25, seed=3))
    assert len(val) == 20 and len(fit) == 60 and not set(fit.indices.tolist()) & set(val.indices.tolist())
    assert torch.equal(fit.indices, again.indices)
    assert (torch.equal(val.gather([0, 1]), train.gather(val.indices[:2]))
            and torch.equal(val.targets, train.targets[val.indices]))
    with pytest.raises(RetaError, match="eval_split='val' unknown; valid: test, holdout"):
        ProbeSpec.from_cfg({"eval_split": "val"})

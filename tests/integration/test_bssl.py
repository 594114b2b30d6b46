"""CV-DD's batch-specific soft labels (``protocol=kd_bssl``): the committee labeller against a manual forward of
train-mode copies on half batches, the cached teachers untouched, stored = online, the evaluation end to end, and bad
values refused before any work."""

from __future__ import annotations

import copy
import dataclasses
import json

import lightning as L
import pytest
import torch

from reta import evaluate
from reta.cli import evaluate as cli_evaluate
from reta.errors import RetaError
from reta.evaluation.full_data import full_data_key
from reta.models import build_model
from reta.training.committee import CommitteeLabeller, prior_weights
from reta.training.soft_labels import batch_loader, label_teacher, relabel, stored_loader
from reta.training.student import Protocol, StudentModule

from fixtures import write_idx_dataset
from helpers import cli, compose_cfg, fit_student_state, tiny_overrides

MEAN, STD = [0.3], [0.3]
ACC = [81.0, 88.0, 85.0]
KD = dict(name="kd_bssl", labels="teacher", optimizer="adamw", lr=1e-2, momentum=0.9, weight_decay=0.01,
          decay_only_weights=True, batch_size=6, epochs=2, schedule="cosine", cosine_eta=2.0, temperature=4.0,
          rrc_scale_min=0.5, crop_pad=0, flip=True, cutmix=True, dsa=False, teacher_mode="train", eval_every=10,
          soft_labels="online", shuffle_patches=1, ema_decay=0.0, micro_batches=1, lr_source="protocol",
          committee={"teachers": ["a", "b", "c"], "priors": ACC, "temperature": 10.0, "split": 3})


def tiny_net(seed: int):
    torch.manual_seed(seed)
    net = build_model({"name": "convnet_tiny", "kwargs": {}}, 4, 1, 16)
    with torch.no_grad():  # running statistics unlike a fresh batch's, so train mode and eval mode differ
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval().requires_grad_(False)


def committee(split=3):
    teachers = [tiny_net(s) for s in (1, 2, 3)]
    return teachers, CommitteeLabeller(teachers, prior_weights(ACC, 10.0), split, ["a", "b", "c"], ACC, 10.0)


def states(nets):
    return [{k: v.clone() for k, v in n.state_dict().items()} for n in nets]


def test_bssl_logits_are_the_prior_weighted_sum_of_train_mode_teachers_on_half_batches():
    teachers, labeller = committee(split=4)
    before = states(teachers)
    x = torch.randn(8, 1, 16, 16, dtype=torch.float64)
    got = label_teacher(labeller.double(), "train")(x)  # what the student labels with (a private train-mode copy)
    copies = [copy.deepcopy(t).train() for t in teachers]
    w = torch.softmax(torch.tensor(ACC, dtype=torch.float64) / 10.0, 0)
    with torch.no_grad():
        want = torch.cat([sum(wi * c(x[h:h + 4]) for wi, c in zip(w, copies)) for h in (0, 4)])
        whole = sum(wi * c2(x) for wi, c2 in zip(w, [copy.deepcopy(t).train() for t in teachers]))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(got, whole, atol=1e-4)  # half-batch statistics are not whole-batch ones
    # the labelled teachers are copies: the cached modules keep their weights, running statistics and mode
    for t, b in zip(teachers, before):
        assert not t.training and all(torch.equal(b[k], v) for k, v in t.state_dict().items())


def test_eval_mode_committee_is_the_weighted_sum_of_the_frozen_teachers():
    teachers, labeller = committee(split=None)
    x = torch.randn(5, 1, 16, 16)
    w = torch.softmax(torch.tensor(ACC, dtype=torch.float64) / 10.0, 0)
    with torch.no_grad():
        want = sum(float(wi) * t(x) for wi, t in zip(w, teachers))
    torch.testing.assert_close(label_teacher(labeller, "eval")(x), want, rtol=1e-5, atol=1e-6)
    assert labeller.describe()["weights"] == pytest.approx(w.tolist())


def train(protocol, loader, teacher):
    L.seed_everything(7, verbose=False)
    torch.manual_seed(3)
    module = StudentModule(build_model({"name": "convnet_tiny", "kwargs": {}}, 4, 1, 16), protocol, MEAN, STD,
                           len(loader), seed=5, teacher=teacher)
    return fit_student_state(module, loader, protocol.epochs)


def test_stored_and_online_bssl_give_the_same_student_and_leave_the_teachers_alone(tmp_path):
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(12, 1, 16, 16, generator=g), torch.arange(12) % 4
    p = Protocol.from_cfg(KD)
    teachers, labeller = committee()
    before = states(teachers)
    online = train(p, batch_loader(images, labels, p.batch_size, 5), labeller)
    store = relabel(images, labels, p, labeller, MEAN, STD, seed=5, out_dir=tmp_path / "fkd")
    stored = train(dataclasses.replace(p, soft_labels="stored"), stored_loader(store, images, labels, p, labeller, 5),
                   labeller)
    assert all(torch.equal(online[k], stored[k]) for k in online)
    meta = json.loads((store / "meta.json").read_text())
    assert meta["labeller"]["split"] == 3 and meta["labeller"]["teachers"] == ["a", "b", "c"]
    with pytest.raises(RetaError, match="labeller is"):  # another chunk size labels differently: the store refuses
        stored_loader(store, images, labels, p, CommitteeLabeller(teachers, prior_weights(ACC, 10.0), 2,
                                                                  ["a", "b", "c"], ACC, 10.0), 5)
    for t, b in zip(teachers, before):
        assert all(torch.equal(b[k], v) for k, v in t.state_dict().items())


@pytest.mark.parametrize("change, says", [
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"split": 0}, "split must be a positive number"),
    ({"priors": [1.0]}, "1 priors for 3 teachers"),
    ({"priors": "student_acc"}, "priors must be"),
    ({"teachers": []}, "non-empty list"),
])
def test_bad_committee_values_are_refused(change, says):
    with pytest.raises(RetaError, match=says):
        Protocol.from_cfg({**KD, "committee": {**KD["committee"], **change}})
    with pytest.raises(RetaError, match="needs labels=teacher"):
        Protocol.from_cfg({**KD, "labels": "hard"})


@pytest.fixture()
def tiny(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    return tmp_path, tiny_overrides(tmp_path, root)


def test_reta_evaluate_kd_bssl_labels_with_the_cached_committee(tiny):
    tmp_path, ov = tiny
    teachers = "protocol.committee.teachers=[convnet_tiny,{name:convnet,kwargs:{depth:1,width:4,norm:batch},label:c1}]"
    cfg = compose_cfg("evaluate", [*ov, "protocol=kd_bssl", teachers, "protocol.committee.priors=[50.0,60.0]",
                                   "protocol.epochs=1", "ipc=1", "seeds=[0]", "full_data.enabled=false"])
    m = evaluate.run(cfg)
    assert m["protocol"] == "kd_bssl" and m["protocol_config"]["teacher_mode"] == "train"
    c = m["teacher"]["committee"]
    assert m["teacher"]["name"] == "committee(convnet_tiny,c1)" and c["split"] == 8 and c["temperature"] == 10.0
    assert c["weights"] == pytest.approx(prior_weights([50.0, 60.0], 10.0).tolist())
    assert len(m["sets"]["random"]["acc_last"]) == 1 and 0 <= m["sets"]["random"]["acc_mean"] <= 1
    entries = sorted(p.name for p in (tmp_path / "cache" / "teachers").iterdir())
    assert len(entries) == 2  # both committee teachers were squeezed into the cache, once each


def test_kd_bssl_bad_values_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    for bad, says in [("protocol.committee.split=0", "split must be a positive number"),
                      ("protocol.committee.teachers=[convnet_nope]", "unknown model config 'convnet_nope'; valid:")]:
        out = tmp_path / "out"
        code, lines, err = cli(cli_evaluate, ["protocol=kd_bssl", bad, f"paths.output_dir={out}", "logger=none"],
                               monkeypatch, capsys, cwd=tmp_path)
        assert code == 2, err[-2000:]
        assert len(lines) == 1 and says in lines[0], err[-2000:]
        assert not out.exists() or not any(out.iterdir())


def test_the_full_data_key_names_a_committee_only_when_one_labels():
    with_committee = Protocol.from_cfg(KD)
    without = dataclasses.replace(with_committee, committee=None, teacher_mode="eval")
    assert "committee" not in full_data_key({}, {}, without, 0, "test")["protocol"]
    assert full_data_key({}, {}, with_committee, 0, "test")["protocol"]["committee"]["split"] == 3


def test_the_full_data_key_names_the_data_not_where_its_files_lie():
    """Student-result cache entries are found again on another machine: the dataset's location (``root``, the
    ``hint`` with its resolved data_dir) is not in the key, and a student given ``kwargs: null`` is the one with {}."""
    protocol = dataclasses.replace(Protocol.from_cfg(KD), committee=None, teacher_mode="eval")
    here = {"name": "fashion_mnist", "image_size": 28, "channels": 1, "mean": [0.286], "std": [0.353],
            "num_classes": 10, "root": "/data/here", "hint": "files under /data/here/fashion_mnist", "download": False}
    there = {**here, "root": None, "hint": "files under /elsewhere/fashion_mnist"}
    key = full_data_key(here, {"name": "convnet", "kwargs": None}, protocol, 0, "test")
    assert key == full_data_key(there, {"name": "convnet", "kwargs": {}}, protocol, 0, "test")
    assert key != full_data_key({**here, "image_size": 32}, {"name": "convnet", "kwargs": {}}, protocol, 0, "test")
    assert key != full_data_key(here, {"name": "convnet", "kwargs": {"width": 64}}, protocol, 0, "test")

"""lr_source=set (protocol=dc_mtt): a distilled set's students train at the learning rate the set records (MTT's
learnt α, meta.json syn_lr), the random subset beside it at the protocol's."""

from __future__ import annotations

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
    ov = [*tiny_overrides(tmp_path, root), "model@student=convnet_tiny", "protocol=hard", "protocol.epochs=2",
          "protocol.eval_every=1", "ipc=1", "seeds=[0]", "baseline_cache=false"]
    return tmp_path, ov


def _set(path, **extra):
    g = torch.Generator().manual_seed(0)
    save_distilled(path, torch.rand(10, 1, 28, 28, generator=g), torch.arange(10),
                   {"dataset": "fashion_mnist", "num_classes": 10, "ipc": 1, "method": "mtt", "mean": [0.286],
                    "std": [0.353], "seed": 0, **extra}, class_names=[str(c) for c in range(10)])
    return path


def test_the_sets_students_use_its_lr_and_the_random_subset_the_protocols(tiny):
    tmp_path, ov = tiny
    d = _set(tmp_path / "set", syn_lr=0.05)
    own = evaluate.run(compose_cfg("evaluate", [*ov, f"distilled={d}", "protocol.lr_source=set",
                                                f"paths.output_dir={tmp_path / 'own'}"]))
    at_05 = evaluate.run(compose_cfg("evaluate", [*ov, f"distilled={d}", "protocol.lr=0.05",
                                                  f"paths.output_dir={tmp_path / 'at05'}"]))
    plain = evaluate.run(compose_cfg("evaluate", [*ov, f"distilled={d}", f"paths.output_dir={tmp_path / 'plain'}"]))
    assert own["set_lr"] == 0.05 and "set_lr" not in plain
    assert own["sets"]["distilled"]["acc_last"] == at_05["sets"]["distilled"]["acc_last"]
    assert own["sets"]["random"]["acc_last"] == plain["sets"]["random"]["acc_last"]
    assert own["protocol_config"]["lr"] == plain["protocol_config"]["lr"] != 0.05


@pytest.mark.parametrize("meta", [{}, {"syn_lr": -0.01}])
def test_a_set_without_a_positive_lr_is_refused_before_any_work(tiny, meta):
    tmp_path, ov = tiny
    d = _set(tmp_path / "set", **meta)
    with pytest.raises(RetaError, match=r"protocol.lr_source=set: the distilled set records no positive learning rate"):
        evaluate.run(compose_cfg("evaluate", [*ov, f"distilled={d}", "protocol.lr_source=set",
                                              f"paths.output_dir={tmp_path / 'e'}"]))
    assert not (tmp_path / "e").exists()
    with pytest.raises(RetaError, match=r"protocol.lr_source='sometimes' unknown; valid: protocol, set"):
        evaluate.run(compose_cfg("evaluate", [*ov, "protocol.lr_source=sometimes",
                                              f"paths.output_dir={tmp_path / 'f'}"]))


def test_mtt_is_evaluated_with_dc_mtt(tmp_path):
    cfg = compose_cfg("pipeline", ["method=mtt", "protocol=dc_mtt", f"paths.output_dir={tmp_path}"])
    assert cfg.method.eval_protocol == "dc_mtt" and cfg.protocol.lr_source == "set"
    assert cfg.protocol.epochs == 1001 and cfg.protocol.dsa is True and cfg.protocol.lr == 0.01

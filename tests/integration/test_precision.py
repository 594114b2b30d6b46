"""``trainer.precision=bf16-mixed`` reaches each family's step on CPU: the dtype of a network's output seen inside the
training step (grad-enabled forwards only; test accuracy and KD labelling run under no_grad) is bfloat16 — squeeze,
BN-matching synthesis (SRe2L/FADRM/FADRM+/RETA share its step), the DM family's step (its embedder), the student
protocols (kd, hard) — and float32 with ``32-true``."""

from __future__ import annotations

import pytest
import torch

import reta.synthesis.dm.matcher as dm_matcher
import reta.synthesis.process.gradient as dc_gradient
import reta.synthesis.process.trajectory as mtt_trajectory
import reta.training.teacher as teacher_mod
from reta import distill, evaluate, squeeze
from reta.data.distilled import load_distilled

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides


@pytest.fixture()
def tiny(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=20, classes=10, gz=False)
    return tmp_path, tiny_overrides(tmp_path, root)


@pytest.fixture()
def seen(monkeypatch):
    """Every conv/linear layer of a network built by reta records its output dtype in grad-enabled forwards."""
    dtypes: list[torch.dtype] = []

    def hook(module, args, out):
        if torch.is_grad_enabled() and isinstance(out, torch.Tensor):
            dtypes.append(out.dtype)

    def wrap(build):
        def build_and_hook(*args, **kwargs):
            model = build(*args, **kwargs)
            for m in model.modules():  # layers, not the model: features() calls forward_features, not __call__
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                    m.register_forward_hook(hook)
            return model

        return build_and_hook

    monkeypatch.setattr(teacher_mod, "build_model", wrap(teacher_mod.build_model))
    monkeypatch.setattr(dm_matcher, "build_model", wrap(dm_matcher.build_model))
    monkeypatch.setattr(dc_gradient, "build_model", wrap(dc_gradient.build_model))
    monkeypatch.setattr(mtt_trajectory, "build_model", wrap(mtt_trajectory.build_model))
    return dtypes


PRECISIONS = [("bf16-mixed", torch.bfloat16), ("32-true", torch.float32)]


@pytest.mark.parametrize("precision,dtype", PRECISIONS)
def test_squeeze_step(tiny, seen, precision, dtype):
    _, ov = tiny
    squeeze.run(compose_cfg("squeeze", [*ov, f"trainer.precision={precision}"]))
    assert seen and set(seen) == {dtype}


@pytest.mark.parametrize("precision,dtype", PRECISIONS)
def test_bn_synthesis_step(tiny, seen, precision, dtype):
    tmp_path, ov = tiny
    squeeze.run(compose_cfg("squeeze", ov))  # teacher trained in fp32 first
    seen.clear()
    cfg = compose_cfg("distill", [*ov, "method=reta", "ipc=1", "method.stages.sizes=[28,28]",
                                  "method.stages.budgets=[2,2]", "method.init.mipc=4", "method.init.num_crop=2",
                                  "method.callbacks.pta.num_subsets=2",
                                  f"trainer.precision={precision}"])
    distill.run(cfg)
    assert seen and set(seen) == {dtype}
    assert load_distilled(tmp_path / "out" / "distilled").images.dtype == torch.float32  # the stored set stays fp32


@pytest.mark.parametrize("protocol", ["kd", "hard"])
@pytest.mark.parametrize("precision,dtype", PRECISIONS)
def test_student_step(tiny, seen, protocol, precision, dtype):
    _, ov = tiny
    squeeze.run(compose_cfg("squeeze", ov))
    seen.clear()
    evaluate.run(compose_cfg("evaluate", [*ov, f"protocol={protocol}", "protocol.epochs=1", "protocol.eval_every=1",
                                          "seeds=[0]", "ipc=2", "model@student=convnet_tiny",
                                          f"trainer.precision={precision}"]))
    assert seen and set(seen) == {dtype}


@pytest.mark.parametrize("precision,dtype", PRECISIONS)
def test_dm_step(tiny, seen, precision, dtype):
    _, ov = tiny
    distill.run(compose_cfg("distill", [*ov, "method=dm", "ipc=1", "method.iterations=2", "method.batch_real=4",
                                        "method.embedder.kwargs.width=8", f"trainer.precision={precision}"]))
    assert seen and set(seen) == {dtype}


@pytest.mark.parametrize("precision,dtype", PRECISIONS)
def test_process_steps(tiny, seen, precision, dtype):
    """DC's matching (double backward) and MTT's functional unroll run under the trainer's precision."""
    tmp_path, ov = tiny
    small = ["ipc=1", "method.iterations=1", "method.net.kwargs.depth=2", "method.net.kwargs.width=8",
             f"trainer.precision={precision}"]
    distill.run(compose_cfg("distill", [*ov, "method=dc", "method.batch_real=4", *small,
                                        f"paths.output_dir={tmp_path / 'dc'}"]))
    assert seen and set(seen) == {dtype}
    seen.clear()
    distill.run(compose_cfg("distill", [*ov, "method=mtt", "method.per_ipc.1.syn_steps=2",
                                        "method.experts.num_experts=1", "method.experts.epochs=3",
                                        "method.experts.batch_size=32", *small,
                                        f"paths.output_dir={tmp_path / 'mtt'}"]))
    assert seen and set(seen) == {dtype}


def test_channels_last_reaches_squeeze_synthesis_and_students(tiny, monkeypatch):
    """With ``channels_last=true`` every grad-enabled convolution of the three steps gets NHWC weights (without it
    the multi-channel 3x3 convolutions are NCHW, so this fails)."""
    formats: list[bool] = []

    def hook(module, args, out):
        if torch.is_grad_enabled():
            formats.append(module.weight.is_contiguous(memory_format=torch.channels_last))

    build = teacher_mod.build_model

    def build_and_hook(*args, **kwargs):
        model = build(*args, **kwargs)
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1):
                m.register_forward_hook(hook)
        return model

    monkeypatch.setattr(teacher_mod, "build_model", build_and_hook)
    _, ov = tiny
    ov = [*ov, "channels_last=true"]
    squeeze.run(compose_cfg("squeeze", ov))
    n_squeeze = len(formats)
    distill.run(compose_cfg("distill", [*ov, "method=sre2l", "ipc=1", "method.stages.budgets=[2]"]))
    n_distill = len(formats)
    evaluate.run(compose_cfg("evaluate", [*ov, "protocol=kd", "protocol.epochs=1", "seeds=[0]", "ipc=1",
                                          "model@student=convnet_tiny"]))
    assert 0 < n_squeeze < n_distill < len(formats) and all(formats)

"""EDC (``method=edc``): the category-aware BN term against its formula; α = 1 without extras = SRe2L + real init."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reta import distill
from reta.data.augment import normalize
from reta.data.distilled import load_distilled
from reta.errors import RetaError
from reta.synthesis.bn.category_bn import CategoryAwareBNLoss, class_bn_statistics
from reta.synthesis.bn.matching import TeacherSlot
from reta.synthesis.bn.step import SynthesisStep

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides

MEAN, STD = [0.5], [0.25]


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.b1 = nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.c2, self.b2 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)
        for b in (self.b1, self.b2):  # non-trivial running statistics
            b.running_mean.uniform_(-0.5, 0.5)
            b.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        return self.fc(torch.relu(self.b2(self.c2(x))).mean((2, 3)))


class Data:
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.targets = torch.arange(3).repeat_interleave(5)
        self.images = torch.rand(15, 1, 6, 6, generator=g) * (1 + self.targets.view(-1, 1, 1, 1)) / 3

    def gather(self, idx):
        return self.images[torch.as_tensor(idx)]


def _layer_inputs(model, x):
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append(i[0])) for m in (model.b1, model.b2)]
    model(x)
    for h in hooks:
        h.remove()
    return seen


def test_class_statistics_are_the_class_average_of_per_image_spatial_statistics():
    model, data = Toy().eval(), Data()
    stats = class_bn_statistics(model, data, 3, MEAN, STD, batch_size=4)
    with torch.no_grad():
        inputs = _layer_inputs(model, normalize(data.images, MEAN, STD))
    for (means, vars_), a in zip(stats, inputs):
        for c in range(3):
            a_c = a[data.targets == c]
            torch.testing.assert_close(means[c], a_c.mean((2, 3)).mean(0))
            torch.testing.assert_close(vars_[c], a_c.var((2, 3), unbiased=False).mean(0))


@pytest.mark.parametrize("alpha", [0.5, 0.2])
def test_category_aware_loss_equals_its_formula_on_a_toy_batch(alpha):
    model, data = Toy(), Data()
    slot = TeacherSlot("toy", model, r_bn=0.03, first_multiplier=10.0)
    term = CategoryAwareBNLoss(alpha=alpha, momentum=0.0)

    class Module:  # what bind() reads of the synthesis module
        teachers, train_set, num_classes, mean, std = [slot], data, 3, MEAN, STD

    term.bind(Module())
    x = torch.randn(4, 1, 6, 6, requires_grad=True)
    classes = torch.tensor([0, 2, 2, 1])
    with slot.hooks.capture():
        logits = model(x)
    step = SynthesisStep(0, 0, 0, 0, 0, 6, 0.1, x, x, classes, slot, 0, logits)
    got = term(step)
    # the formula, by hand: Σ_l m_l [α(‖μ_run − m‖ + ‖σ²_run − v‖) + (1 − α)(‖μ̄_cls − m‖ + ‖σ̄²_cls − v‖)] · r_bn
    with torch.no_grad():
        inputs = _layer_inputs(model, x)
        per_image = [_layer_inputs(model, normalize(data.images, MEAN, STD))]
    want = 0.0
    for layer, (a, bn, mult) in enumerate(zip(inputs, (model.b1, model.b2), (10.0, 1.0))):
        m, v = a.mean((0, 2, 3)), a.var((0, 2, 3), unbiased=False)
        real = per_image[0][layer]
        cls_m = torch.stack([real[data.targets == c].mean((2, 3)).mean(0) for c in range(3)])[classes].mean(0)
        cls_v = torch.stack([real[data.targets == c].var((2, 3), unbiased=False).mean(0) for c in range(3)])[classes]
        g = (bn.running_mean - m).norm() + (bn.running_var - v).norm()
        k = (cls_m - m).norm() + (cls_v.mean(0) - v).norm()
        want = want + mult * (alpha * g + (1 - alpha) * k)
    torch.testing.assert_close(got, 0.03 * want)
    got.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_statistic_ema_has_the_ema_value_and_the_batch_gradient():
    model = Toy()
    slot = TeacherSlot("toy", model, r_bn=1.0)
    term = CategoryAwareBNLoss(alpha=1.0, momentum=0.5)
    xs = [torch.randn(4, 1, 6, 6, requires_grad=True) for _ in range(2)]
    for t, x in enumerate(xs):
        with slot.hooks.capture():
            logits = model(x)
        got = term(SynthesisStep(t, 0, 0, t, 0, 6, 0.1, x, x, torch.zeros(4, dtype=torch.long), slot, 0, logits))
    with torch.no_grad():
        a0, a1 = _layer_inputs(model, xs[0]), _layer_inputs(model, xs[1])
    want = 0.0
    for (p, q), bn, mult in zip(zip(a0, a1), (model.b1, model.b2), (10.0, 1.0)):
        m = 0.5 * p.mean((0, 2, 3)) + 0.5 * q.mean((0, 2, 3))
        v = 0.5 * p.var((0, 2, 3), unbiased=False) + 0.5 * q.var((0, 2, 3), unbiased=False)
        want = want + mult * ((bn.running_mean - m).norm() + (bn.running_var - v).norm())
    torch.testing.assert_close(got.detach(), want)


@pytest.fixture()
def tiny(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    return tmp_path, tiny_overrides(tmp_path, root)


def test_edc_with_alpha_1_and_no_extras_is_sre2l_with_real_init_bit_for_bit(tiny):
    tmp_path, ov = tiny
    common = ["ipc=2", "method.stages.budgets=[4]", "method.lr=0.05", "method.augment.rrc=true",
              "method.augment.rrc_scale=[0.5,1.0]", "method.augment.jitter=0", "method.teachers=null"]

    def run(name, *extra):
        out = tmp_path / name
        cfg = compose_cfg("distill", [*ov, *common, *extra, f"paths.output_dir={out}"])
        return load_distilled(distill.run(cfg)["distilled"])

    sre2l = run("sre2l", "method=sre2l", "method.init.kind=real")
    edc1 = run("edc1", "method=edc", "method.losses.1.alpha=1.0", "method.losses.1.momentum=0.0")
    edc = run("edc", "method=edc")
    assert torch.equal(sre2l.images, edc1.images)
    assert not torch.equal(sre2l.images, edc.images)  # the category-aware term and the EMA change the images
    init = edc.meta["synthesis"]["init"]
    assert init["kind"] == "real" and len(init["train_indices"]) == 20 and len(set(init["train_indices"])) == 20


def test_flatness_term_is_the_kl_between_the_ema_and_the_current_view():
    from reta.synthesis.bn.flatness import FlatnessLoss
    from reta.synthesis.bn.step import AugmentSpec, synthesis_augment

    model = Toy()
    slot = TeacherSlot("toy", model, r_bn=1.0)
    spec = AugmentSpec(True, (0.5, 1.0), True, 1)
    term = FlatnessLoss(weight=2.0, beta=0.5, temperature=4.0)

    class Module:
        seed, augment_spec = 3, spec

    term.bind(Module())
    y = torch.zeros(4, dtype=torch.long)
    x0 = torch.randn(4, 1, 6, 6)
    x1 = (x0 + torch.randn(4, 1, 6, 6)).requires_grad_(True)
    first = term(SynthesisStep(0, 5, 0, 0, 0, 6, 0.1, x0, x0, y, slot, 0, model(x0)))
    assert float(first) == 0.0  # at the job start the EMA is the batch itself
    got = term(SynthesisStep(1, 5, 0, 1, 0, 6, 0.1, x1, x1, y, slot, 0, model(x1)))
    gen = torch.Generator().manual_seed(3 * 1_000_003 + 5 + 7919)
    synthesis_augment(torch.cat([x0, x0]), 6, spec, gen)  # the draws of step 0
    ema = 0.5 * x0 + 0.5 * x1.detach()
    views = synthesis_augment(torch.cat([x1, ema]), 6, spec, gen)
    p = torch.log_softmax(model(views[4:]) / 4, 1)
    q = torch.log_softmax(model(views[:4]) / 4, 1)
    want = 2.0 * (p.exp() * (p - q)).sum(1).mean()
    torch.testing.assert_close(got, want)
    got.backward()
    assert x1.grad.abs().sum() > 0
    assert float(FlatnessLoss(weight=0.0)(SynthesisStep(0, 0, 0, 0, 0, 6, 0.1, x0, x0, y, slot, 0, model(x0)))) == 0


def test_ema_student_is_the_one_tested():
    import lightning as L

    from reta.evaluation import protocol_values
    from reta.models import build_model
    from reta.training.student import Protocol, StudentModule, student_loader

    cfg = protocol_values(compose_cfg("evaluate", ["protocol=kd"]).protocol)  # the settings, not the plug-in keys
    p = Protocol.from_cfg({**cfg, "epochs": 2, "batch_size": 5, "ema_decay": 0.9, "eval_every": 1})
    torch.manual_seed(0)
    model = build_model({"name": "convnet_tiny", "kwargs": {}}, 3, 1, 8)
    teacher = build_model({"name": "convnet_tiny", "kwargs": {}}, 3, 1, 8).eval()
    images, labels = torch.rand(10, 1, 8, 8), torch.arange(10) % 3
    from reta.data.base import TensorImageDataset
    from reta.training.common import test_accuracy

    test = TensorImageDataset(torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8), torch.arange(30) % 3,
                              ["a", "b", "c"])
    module = StudentModule(model, p, MEAN, STD, 2, seed=0, test_set=test, teacher=teacher)
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(module, student_loader(images, labels, 5, 0))
    assert int(module.ema.n_averaged) == 4  # one update per optimiser step
    live, avg = dict(model.named_parameters()), dict(module.ema.module.named_parameters())
    assert any(not torch.equal(live[k], avg[k]) for k in live)  # an average, not the live weights
    assert module.history[-1][1] == test_accuracy(module.ema.module, test, MEAN, STD)
    with pytest.raises(RetaError, match="ema_decay"):
        Protocol.from_cfg({**cfg, "ema_decay": 1.0})

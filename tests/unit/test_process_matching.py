"""DC's layer-wise matching distance against its formula, and DSA's Siamese augmentation inside the DC loop."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from reta.data.registry import load_split
from reta.synthesis.process.config import GradientSpec
from reta.synthesis.process.distance import layerwise_distance, match_distance
from reta.synthesis.process.gradient import GradientMatcher

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides


def _formula(g_real: list[torch.Tensor], g_syn: list[torch.Tensor]) -> float:
    """Σ over tensors of Σ over output rows (1 − ⟨r, s⟩ / (‖r‖‖s‖ + 1e-6)); 1-d tensors contribute 0 — one row at a
    time, in plain Python arithmetic."""
    total = 0.0
    for r, s in zip(g_real, g_syn):
        if r.ndim == 1:
            continue
        for i in range(r.shape[0]):
            a, b = r[i].flatten().tolist(), s[i].flatten().tolist()
            dot = sum(x * y for x, y in zip(a, b))
            na, nb = sum(x * x for x in a) ** 0.5, sum(y * y for y in b) ** 0.5
            total += 1.0 - dot / (na * nb + 1e-6)
    return total


def test_layerwise_distance_equals_its_formula_float64():
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 2, 3, 3), (4,), (5, 3, 2), (3, 7), (3,)]  # conv weight, bias, 3-d, linear weight, bias
    g_real = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    g_syn = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    d = match_distance(g_real, g_syn, "ours")
    assert d.dtype == torch.float64
    assert d.item() == pytest.approx(_formula(g_real, g_syn), rel=1e-12, abs=1e-12)
    # 1-d tensors are ignored, identical gradients match, opposite ones are at 2 per row
    assert layerwise_distance(g_real[1], g_syn[1]).item() == 0.0
    assert match_distance(g_real, g_real).item() == pytest.approx(0.0, abs=1e-5)
    rows = 4 + 5 + 3
    assert match_distance(g_real, [-x for x in g_real]).item() == pytest.approx(2.0 * rows, abs=1e-5)
    flat_r = torch.cat([x.flatten() for x in g_real])
    flat_s = torch.cat([x.flatten() for x in g_syn])
    assert match_distance(g_real, g_syn, "mse").item() == pytest.approx(((flat_r - flat_s) ** 2).sum().item())
    with pytest.raises(ValueError, match="valid: ours, mse, cos"):
        match_distance(g_real, g_syn, "l1")


@pytest.fixture()
def tiny_matcher(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=10, classes=10, gz=False)
    cfg = compose_cfg("distill", [*tiny_overrides(tmp_path, root), "method=dsa", "ipc=2"])
    train = load_split(cfg.dataset, "train", None)

    def make(method_overrides: dict) -> GradientMatcher:
        m = {**OmegaConf.to_container(cfg.method), "batch_real": 4, "iterations": 1,
             "net": {"name": "convnet", "kwargs": {"depth": 2, "width": 8, "norm": "instance"}}, **method_overrides}
        return GradientMatcher(GradientSpec.from_cfg(m, 2), dict(cfg.dataset), 2, train, 0, torch.device("cpu"))

    return make


def test_dsa_applies_one_draw_to_the_real_and_synthetic_batch_of_a_class(tiny_matcher):
    matcher = tiny_matcher({})
    seen = []
    matcher.on_pair = lambda c, real, syn, sample: seen.append((c, real.detach(), syn.detach(), sample))
    # make the real batch of every class start with that class's synthetic images: Siamese ⇔ they stay equal
    of_class = matcher.sampler.of_class

    def real_batch(c, n):
        syn = matcher.images.data[c * 2 : (c + 1) * 2].detach()
        return torch.cat([syn, of_class(c, n - 2)])

    matcher.sampler.of_class = real_batch
    changed = 0
    for c in range(10):
        real, syn = matcher.pair(c)
        assert torch.equal(real[:2], syn), f"class {c}: real and synthetic got different augmentations"
        changed += not torch.equal(syn, matcher.images.data[c * 2 : (c + 1) * 2].detach())
    assert changed >= 5, "DSA left the synthetic images unchanged"
    assert all(s.shared and all(u.shape[0] == 1 for u in s.uniforms.values()) for *_, s in seen)
    ops = {s.ops for *_, s in seen}
    assert len(ops) > 1, "one op drawn for every class: the draws are not per class"
    dc = tiny_matcher({"siamese": False})
    real, syn = dc.pair(0)
    assert torch.equal(syn, dc.images.data[:2]), "DC (no Siamese DSA) must not augment"

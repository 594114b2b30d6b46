"""DRC anchor provider (reta.synthesis.reta.drc): argmin on a hand-built pool, reuse policies, record, α = 1, state.

docs/methods.md §4.1, §4.6 ("λ = 0 picks the feature nearest neighbour, λ = 1 the least complex anchor; reuse policies
hold; α = 1 makes a merge the identity").
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reta.data.augment import normalize
from reta.data.base import TensorImageDataset
from reta.errors import RetaError
from reta.models import features
from reta.synthesis.bn.anchors import StageEnd, build_anchor_provider
from reta.synthesis.bn.init import PatchBank, PatchPool
from reta.synthesis.bn.matching import TeacherSlot
from reta.synthesis.bn.residual import ResidualConnection, residual_merge
from reta.synthesis.bn.schedule import StageSchedule
from reta.synthesis.reta.drc import RetrievalAnchors
from reta.synthesis.reta.pool import FeaturePool, pool_ranks, shared_feature_pool
from reta.synthesis.reta.retrieval import image_complexity

MEAN, STD, D = [0.4], [0.3], 8


class PixelNet(nn.Module):
    """A 'teacher' whose penultimate features are the (normalised) pixels themselves."""

    num_features = D * D

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _images() -> torch.Tensor:
    """Six 8×8 crops per class with very different complexity: constant, ramp, stripes, checkerboards, noise."""
    g = torch.Generator().manual_seed(3)
    i = torch.arange(D)
    out = [
        torch.full((D, D), 0.55),
        torch.linspace(0.1, 0.9, D).view(1, D).expand(D, D),
        ((i // 2) % 2).float().view(D, 1).expand(D, D) * 0.8 + 0.1,
        (((i[:, None] // 2) + (i[None, :] // 2)) % 2).float(),
        (((i[:, None] // 4) + (i[None, :] // 4)) % 2).float() * 0.6 + 0.2,
        torch.rand(D, D, generator=g),
    ]
    return torch.stack(out).unsqueeze(1)


class FakeModule:
    """What the provider reads of a SynthesisModule: teachers, pools, bank, normalisation, schedule."""

    def __init__(self, num_classes: int = 2, ipc: int = 3, bank: bool = True) -> None:
        imgs = _images()
        per = len(imgs)
        pixels = torch.cat([imgs.flip(0) if c % 2 else imgs for c in range(num_classes)])
        self.train_set = TensorImageDataset((pixels * 255).round().to(torch.uint8),
                                            torch.arange(num_classes).repeat_interleave(per),
                                            [str(c) for c in range(num_classes)])
        boxes = torch.tensor([[0, 0, D, D]] * per)
        self.patch_pool = PatchPool([torch.arange(c * per, (c + 1) * per) for c in range(num_classes)],
                                    [boxes.clone() for _ in range(num_classes)],
                                    [torch.arange(per).float() for _ in range(num_classes)], D)
        self.patch_bank = PatchBank(self.patch_pool, self.train_set, ipc, "easy") if bank else None
        self.teachers = [TeacherSlot("pix", PixelNet(), 0.0)]
        self.mean, self.std = MEAN, STD
        self.schedule = StageSchedule([D, D, D], [1, 1, 1], 0.1)
        self.num_classes, self.ipc = num_classes, ipc
        self.replaced: torch.Tensor | None = None

    def teacher_features(self, x, teacher=None):
        return features(self.teachers[0 if teacher is None else teacher].model, x)

    def replace_images(self, new):
        self.replaced = new


def provider(module, **kw) -> RetrievalAnchors:
    p = RetrievalAnchors(**kw)
    p.setup(module)
    return p


def event(query_pixels: torch.Tensor, classes, slot: int = 0, stage: int = 0) -> StageEnd:
    x = normalize(query_pixels, MEAN, STD)
    return StageEnd(0, slot, torch.as_tensor(classes), stage, D, D, x)


def brute_force(module, c: int, query_pixels: torch.Tensor, lam: float) -> torch.Tensor:
    """J over class c's pool, computed from scratch (pixel features, min–max complexity)."""
    crops = module.patch_pool.render(module.train_set, c)
    z = F.normalize(normalize(crops, MEAN, STD).flatten(1), dim=1)
    q = F.normalize(normalize(query_pixels, MEAN, STD).flatten(1), dim=1)
    cx = image_complexity(crops).double()
    chat = (cx - cx.min()) / (cx.max() - cx.min() + 1e-12)
    return (1 - lam) * ((q - z) ** 2).sum(1).double() + lam * chat


@pytest.mark.parametrize("lam", [0.0, 0.1, 0.5, 1.0])
def test_drc_returns_the_argmin_on_a_hand_built_pool(lam):
    module = FakeModule()
    crops0 = module.patch_pool.render(module.train_set, 0)
    query = (0.9 * crops0[3:4] + 0.1 * crops0[5:6])  # near the fine checkerboard, a complex crop
    query = torch.cat([query, query.flip(-1)])  # class 0 and class 1 (whose pool is in reverse order)
    p = provider(module, lam=lam)
    anchors = p.anchors(event(query, [0, 1]))
    for i, c in enumerate([0, 1]):
        j = p.choices[i]
        expected = brute_force(module, c, query[i : i + 1], lam)
        assert j.cls == c and j.index == int(expected.argmin())
        assert j.score == pytest.approx(float(expected.min()), abs=1e-5)
        assert torch.allclose(
            anchors[i], normalize(module.patch_pool.render(module.train_set, c, [j.rank]), MEAN, STD)[0]
        )
    chosen = p.choices[0].index
    crops_c = image_complexity(crops0)
    if lam == 0.0:  # pure feature nearest neighbour
        assert chosen == 3
    if lam == 1.0:  # least complex crop regardless of fit
        assert chosen == int(crops_c.argmin()) == 0


def test_reuse_allow_lets_slots_share_an_anchor():
    module = FakeModule(ipc=3)
    q = module.patch_pool.render(module.train_set, 0)[3:4]
    p = provider(module, lam=0.0, reuse="allow")
    for slot in range(3):
        p.anchors(event(q, [0], slot=slot))
    assert [ch.index for ch in p.choices] == [3, 3, 3]


def test_reuse_per_connection_excludes_other_slots_at_the_same_connection_only():
    module = FakeModule(ipc=3)
    q = module.patch_pool.render(module.train_set, 0)[3:4]
    p = provider(module, lam=0.0, reuse="per_connection")
    for conn in range(2):
        for slot in range(3):
            p.anchors(event(q, [0], slot=slot, stage=conn))
    at = {(ch.slot, ch.connection): ch.index for ch in p.choices}
    for conn in range(2):
        assert len({at[s, conn] for s in range(3)}) == 3  # distinct within a connection
        assert at[0, conn] == 3  # greedy in slot order: slot 0 gets the nearest
    assert [at[s, 0] for s in range(3)] == [at[s, 1] for s in range(3)]  # reuse across connections is fine


def test_reuse_never_excludes_initial_and_every_earlier_anchor_then_falls_back():
    module = FakeModule(ipc=2)  # initial anchors: ranks 0 and 1 of each class ("easy" band)
    q = module.patch_pool.render(module.train_set, 0)[0:1]  # the query IS an initial anchor
    p = provider(module, lam=0.0, reuse="never")
    for conn in range(2):
        for slot in range(2):
            p.anchors(event(q, [0], slot=slot, stage=conn))
    used = [ch.index for ch in p.choices]
    assert len(set(used)) == 4 and not set(used) & {0, 1}
    with pytest.warns(UserWarning, match="falls back to 'allow'"):  # 6 entries: 2 initial + 4 used → exhausted
        p.anchors(event(q, [0], slot=0, stage=2))
    assert p.choices[-1].fell_back and p.choices[-1].index == 0
    assert p.record()["fallbacks"] == 1


def test_state_dict_round_trip_keeps_the_exclusions_and_a_replayed_connection_is_recorded_once():
    module = FakeModule(ipc=3)
    q = module.patch_pool.render(module.train_set, 0)[3:4]
    p = provider(module, lam=0.0, reuse="per_connection")
    p.anchors(event(q, [0], slot=0))
    resumed = provider(module, lam=0.0, reuse="per_connection")
    resumed.load_state_dict(p.state_dict())
    resumed.anchors(event(q, [0], slot=1))
    assert resumed.choices[0].index == 3 and resumed.choices[1].index != 3  # slot 0's pick is still excluded
    resumed.anchors(event(q, [0], slot=1))  # replay after a resume: one record per (class, slot, connection)
    assert len(resumed.choices) == 2


def test_record_for_meta_is_nested_class_slot_connection():
    module = FakeModule(num_classes=2, ipc=2)
    crops = module.patch_pool.render(module.train_set, 0)
    p = provider(module, lam=0.1)
    for slot in range(2):
        for conn in range(2):
            p.anchors(event(torch.cat([crops[slot : slot + 1], crops[4:5]]), [0, 1], slot=slot, stage=conn))
    rec = p.describe()
    assert rec["kind"] == "retrieval" and rec["lam"] == 0.1
    ch = rec["choices"]
    assert len(ch["ranks"]) == 2 and len(ch["ranks"][0]) == 2 and len(ch["ranks"][0][0]) == 2
    assert ch["count"] == 8 and all(isinstance(v, float) for v in ch["scores"][1][1])
    first = p.choices[0]
    assert ch["sources"][0][0][0] == int(module.patch_pool.source[0][first.rank])
    # slot s's query is its own initial patch (rank s): with λ small it is retrieved again
    assert ch["ranks"][0][1][0] == 1 and 0 < ch["initial_anchor_frac"] <= 1


def test_alpha_one_makes_a_merge_the_identity_with_drc_anchors():
    module = FakeModule()
    crops = module.patch_pool.render(module.train_set, 0)
    x = normalize(0.5 * crops[2:4] + 0.5 * crops[4:6], MEAN, STD)  # not a pool entry: the anchor differs from x
    assert residual_merge(x, torch.randn_like(x), 1.0, D) is x
    cb = ResidualConnection(1.0, RetrievalAnchors(lam=0.1))
    cb.provider.setup(module)
    cb.on_synthesis_stage_end(None, module, StageEnd(0, 0, torch.tensor([0, 1]), 0, D, D, x))
    assert torch.equal(module.replaced, x) and len(cb.provider.choices) == 2  # retrieved, logged, not merged
    cb = ResidualConnection(0.5, RetrievalAnchors(lam=0.1))
    cb.provider.setup(module)
    cb.on_synthesis_stage_end(None, module, StageEnd(0, 0, torch.tensor([0, 1]), 0, D, D, x))
    assert not torch.equal(module.replaced, x)


def test_disabled_provider_is_the_static_fadrm_anchor():
    module = FakeModule(ipc=2)
    x = torch.zeros(2, 1, D, D)
    off = provider(module, enabled=False)
    got = off.anchors(StageEnd(0, 1, torch.tensor([0, 1]), 0, D, D, x))
    assert torch.equal(got, normalize(module.patch_bank.get([0, 1], 1), MEAN, STD))
    assert off.choices == [] and off.describe()["kind"] == "static"


def test_pool_is_shared_cached_and_thinned():
    module = FakeModule()
    a = shared_feature_pool(module, 0, None)
    assert shared_feature_pool(module, 0, None) is a and shared_feature_pool(module, 0, 3) is not a
    f = a.features(0)
    assert f.shape == (6, D * D) and torch.allclose(f.norm(dim=1), torch.ones(6))
    assert a.features(0) is f  # computed once
    assert pool_ranks(300, 4).tolist() == [0, 100, 199, 299] and pool_ranks(5, None).tolist() == list(range(5))
    thin = shared_feature_pool(module, 0, 3)
    assert thin.ranks(0).tolist() == [0, 2, 5] and thin.features(0).shape == (3, D * D)
    assert isinstance(a, FeaturePool)


DRC = "reta.synthesis.reta.drc.RetrievalAnchors"


@pytest.mark.parametrize(
    "kwargs,match",
    [({"lam": 1.5}, "lam must be a number in"), ({"reuse": "sometimes"}, "reuse must be one of"),
     ({"normalization": "zscore"}, "normalization must be one of"), ({"sigma": 0}, "sigma must be"),
     ({"pool_size": 0}, "pool_size must be"), ({"lamda": 0.1}, "lamda"),
     ({"keep_margin": -0.1}, "keep_margin must be"), ({"confidence_weight": -1}, "confidence_weight must be")],
)
def test_bad_provider_config_fails_with_one_line(kwargs, match):
    with pytest.raises(RetaError, match=match) as err:
        build_anchor_provider({"_target_": DRC, **kwargs})
    assert "\n" not in str(err.value)


def test_build_from_config_and_missing_pool():
    p = build_anchor_provider({"_target_": DRC, "lam": 0.2, "reuse": "never"})
    assert isinstance(p, RetrievalAnchors) and p.needs_pool and p.lam == 0.2
    module = FakeModule()
    module.patch_pool = None
    with warnings.catch_warnings(), pytest.raises(RetaError, match="needs the real-patch pool"):
        p.setup(module)


def test_keep_margin_keeps_the_slots_own_patch_unless_beaten_by_more_than_the_margin():
    module = FakeModule(ipc=2)
    crops0 = module.patch_pool.render(module.train_set, 0)
    query = torch.cat([crops0[3:4], crops0[3:4].flip(-1)])  # far from both slot-1 own patches (rank 1 of each class)
    paper = provider(module, lam=0.1)
    paper.anchors(event(query, [0, 1], slot=1))
    assert not any(ch.initial for ch in paper.choices)  # the paper's argmin moves away from the own patch
    gaps = [brute_force(module, c, query[i : i + 1], 0.1) for i, c in enumerate([0, 1])]
    own = [paper._initial_index(c, 1) for c in (0, 1)]
    gap = [float(g[o] - g.min()) for g, o in zip(gaps, own, strict=True)]
    safe = provider(module, lam=0.1, keep_margin=max(gap) + 1e-4)
    got = safe.anchors(event(query, [0, 1], slot=1))
    assert all(ch.initial for ch in safe.choices) and [ch.index for ch in safe.choices] == own
    assert torch.equal(got, normalize(module.patch_bank.get([0, 1], 1), MEAN, STD))  # = FADRM's static anchor
    tight = provider(module, lam=0.1, keep_margin=min(gap) / 2)
    tight.anchors(event(query, [0, 1], slot=1))
    assert [ch.index for ch in tight.choices] == [ch.index for ch in paper.choices]
    assert safe.describe()["keep_margin"] == pytest.approx(max(gap) + 1e-4)


def test_confidence_weight_prefers_the_teachers_confident_crops():
    module = FakeModule(ipc=1)
    crops0 = module.patch_pool.render(module.train_set, 0)
    query = crops0[5:6]  # the noise crop: rank 5, the least confident entry of class 0
    plain_choice = provider(module, lam=0.0)
    plain_choice.anchors(event(query, [0]))
    assert plain_choice.choices[0].rank == 5
    conf = provider(module, lam=0.0, confidence_weight=100.0)
    conf.anchors(event(query, [0]))
    assert conf.choices[0].rank == 0  # μ large: the most confident crop
    fit = brute_force(module, 0, query, 0.0)
    assert conf.choices[0].score == pytest.approx(float(fit[0]), abs=1e-5)  # J' = J + μ·0 at rank 0


def test_feature_pool_disk_cache_is_written_once_and_read_back_without_a_feature_pass(tmp_path):
    calls = []

    def fresh():
        module = FakeModule()
        module.teachers[0].meta = {"key": "pixnet"}
        module.feature_pool_cache = tmp_path
        real = module.teacher_features
        module.teacher_features = lambda x, t=None: (calls.append(len(x)), real(x, t))[1]
        return module

    a = shared_feature_pool(fresh(), 0, None)
    a.complexity_specs.add((D, 1.0, "central"))
    fa, ca = a.features(1), a.complexity(1, D)
    assert sum(calls) == 6 and len(list(tmp_path.rglob("class_1.pt"))) == 1
    calls.clear()
    b = shared_feature_pool(fresh(), 0, None)
    assert torch.equal(b.features(1), fa) and torch.equal(b.complexity(1, D), ca) and calls == []  # from disk
    other = FakeModule()
    other.teachers[0].meta = {"key": "another-teacher"}
    other.feature_pool_cache = tmp_path
    shared_feature_pool(other, 0, None).features(1)
    assert len(list(tmp_path.rglob("class_1.pt"))) == 2  # another teacher: its own entry
    anonymous = FakeModule()  # a teacher without an id is never cached
    anonymous.feature_pool_cache = tmp_path / "anon"
    shared_feature_pool(anonymous, 0, None).features(0)
    assert not (tmp_path / "anon").exists()

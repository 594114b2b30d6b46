"""The pieces the DM loop relies on: Siamese DSA per class, IDM partition-and-expansion, per-IPC config tables."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from reta.data.dsa import DSA, DSAParams
from reta.data.expansion import expand, expand_quadrants, make_mosaics, training_view
from reta.errors import RetaError
from reta.synthesis.dm.config import DistributionSpec, resolve_by_ipc

from helpers import compose_cfg


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("op", ["color", "crop", "cutout", "flip", "scale", "rotate"])
def test_dsa_op_is_the_same_for_real_and_synthetic_batch_of_a_class(op):
    """One seed → one transform applied to the real batch (many images) and the synthetic batch (few)."""
    dsa = DSA(DSAParams(strategy=op))
    img = rand(1, 1, 12, 12, seed=1)
    real = torch.cat([img, rand(6, 1, 12, 12, seed=2)])  # image 0 is shared by both batches
    syn = torch.cat([img, rand(2, 1, 12, 12, seed=3)])
    for seed in range(5):
        r, s = dsa.siamese(real, syn, seed=seed)
        assert torch.equal(r[0], s[0]), (op, seed)
        r2, s2 = dsa.siamese(real, syn, seed=seed)  # same seed, same draw
        assert torch.equal(r, r2) and torch.equal(s, s2)


def test_dsa_full_strategy_is_siamese_and_differentiable():
    dsa = DSA(DSAParams())  # color_crop_cutout_flip_scale_rotate, one op per draw
    img = rand(1, 1, 12, 12, seed=4)
    real = torch.cat([img, rand(9, 1, 12, 12, seed=5)])
    syn = torch.cat([img, rand(3, 1, 12, 12, seed=6)]).requires_grad_(True)
    for seed in range(12):
        r, s = dsa.siamese(real, syn, seed=seed)
        assert torch.equal(r[0], s[0].detach())
    s.pow(2).sum().backward()
    assert syn.grad is not None and torch.isfinite(syn.grad).all() and syn.grad.abs().sum() > 0


def test_expand_quadrants_inverts_make_mosaics_on_smooth_images():
    # constant images survive the ×0.5 / ×2 bilinear round trip exactly
    full = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 1, 6, 6).contiguous()
    mos = make_mosaics(full)
    assert mos.shape == (2, 1, 6, 6)
    assert torch.allclose(expand_quadrants(mos), full)


def test_expand_quadrants_layout_and_gradient():
    x = rand(2, 1, 4, 4, seed=7).requires_grad_(True)
    out = expand_quadrants(x)
    assert out.shape == (8, 1, 4, 4)
    # quadrant order: top-left, bottom-left, top-right, bottom-right of each stored image, images kept together
    tl = torch.nn.functional.interpolate(x[1:2, :, :2, :2], size=(4, 4), mode="bilinear", align_corners=False)
    br = torch.nn.functional.interpolate(x[1:2, :, 2:, 2:], size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(out[4], tl[0]) and torch.allclose(out[7], br[0])
    out.sum().backward()
    assert x.grad.abs().min() > 0
    with pytest.raises(ValueError, match="even"):
        expand_quadrants(rand(1, 1, 5, 4))


def test_training_view_expands_only_when_meta_says_so():
    imgs = torch.rand(4, 1, 6, 6)
    labels = torch.tensor([0, 0, 1, 1])
    same = training_view(imgs, labels, {"ipc": 2})
    assert same[0] is imgs
    big, lab = training_view(imgs, labels, {"expansion": "quadrants"})
    assert big.shape == (16, 1, 6, 6) and lab.tolist() == [0] * 8 + [1] * 8
    assert big.min() >= 0 and big.max() <= 1
    with pytest.raises(RetaError, match="unknown expansion"):
        expand(imgs, labels, "octants")


def test_per_ipc_merges_the_block_of_the_runs_ipc_only():
    """One per-IPC rule for every family (reta.utils.config.per_ipc_override): the block whose key is the run's IPC."""
    m = {"name": "x", "ce_weight": 0.3, "queue": {"push_every": 30, "batch": 256},
         "per_ipc": {1: {"ce_weight": 0.5, "queue": {"push_every": 5}}, 10: {}, 50: {"ce_weight": 0.1}}}
    assert resolve_by_ipc(m, 1)["queue"] == {"push_every": 5, "batch": 256}
    assert resolve_by_ipc(m, 5)["ce_weight"] == 0.3  # no block for IPC 5: the top level
    assert resolve_by_ipc(m, 10) == {"name": "x", "ce_weight": 0.3, "queue": {"push_every": 30, "batch": 256}}
    assert resolve_by_ipc(m, 50)["ce_weight"] == 0.1
    assert resolve_by_ipc({"name": "y", "per_ipc": {10: {"lr": 2}}}, 1) == {"name": "y"}
    with pytest.raises(RetaError, match="per_ipc must map IPC values"):
        resolve_by_ipc({"name": "y", "per_ipc": {"ten": {"lr": 2}}}, 10)


def test_a_wrong_type_fails_with_one_line_naming_the_key():
    with pytest.raises(RetaError, match=r"method.queue.lr: Value 'abc' of type 'str' could not be converted to Float"):
        DistributionSpec.from_cfg({**DM_YAML, "name": "idm", "variant": "idm", "queue": {"lr": "abc"}}, 10)
    with pytest.raises(RetaError, match=r"method.iterations:"):
        DistributionSpec.from_cfg({**DM_YAML, "name": "dm", "iterations": "many"}, 10)


#: conf/method/dm.yaml as composed (the one source of the method's defaults)
DM_YAML = OmegaConf.to_container(compose_cfg("distill", ["paths.output_dir=/tmp/x", "method=dm"]).method, resolve=True)


def test_a_misspelt_method_key_fails():
    with pytest.raises(RetaError, match="unknown keys"):
        DistributionSpec.from_cfg({**DM_YAML, "name": "dm", "iterationz": 5}, 10)
    with pytest.raises(RetaError, match="method.queue: unknown keys"):
        DistributionSpec.from_cfg({**DM_YAML, "name": "idm", "variant": "idm", "queue": {"sizee": 3}}, 10)
    with pytest.raises(RetaError, match="method.iid.pool: unknown keys"):
        DistributionSpec.from_cfg({**DM_YAML, "name": "dm", "iid": {"pool": {"sise": 3}}}, 10)
    with pytest.raises(ValueError, match="unknown DSA op"):
        DistributionSpec.from_cfg({**DM_YAML, "name": "dm", "dsa": {"strategy": "color_blur"}}, 10)
    with pytest.raises(RetaError, match="variant=idm"):
        DistributionSpec.from_cfg({**DM_YAML, "name": "dm", "ce_weight": 0.5}, 10)
    with pytest.raises(RetaError, match="BatchNorm embedder"):
        DistributionSpec.from_cfg({**DM_YAML, "embedder": {"name": "convnet", "kwargs": {"norm": "batch"}}}, 10)


BASE = ["paths.output_dir=/tmp/x", "paths.cache_dir=/tmp/c"]


@pytest.mark.parametrize("method", ["dm", "dm_iid", "idm", "idm_iid"])
@pytest.mark.parametrize("dataset", ["fashion_mnist", "cifar10", "tiny_imagenet"])
def test_method_configs_compose(method, dataset):
    cfg = compose_cfg("distill", [*BASE, f"method={method}", f"dataset={dataset}"])
    OmegaConf.to_container(cfg, resolve=True)
    for ipc in (1, 10, 50):
        spec = DistributionSpec.from_cfg(cfg.method, ipc)
        assert spec.name == method and spec.synthesize["_target_"] == "reta.synthesis.dm.family.synthesize"
        assert spec.scale == ("cpu" if dataset == "fashion_mnist" else "paper")
        assert spec.expansion == ("quadrants" if method.startswith("idm") else "none")
        assert (spec.iid.lambda_cm, spec.iid.kappa) == {
            "dm": (0.0, 0.0), "idm": (0.0, 0.0), "dm_iid": (0.01, 0.05), "idm_iid": (0.03, 0.01)}[method]
        if spec.scale == "paper":
            assert spec.iterations == 20000 and spec.batch_real in (256, 5000)
            assert spec.embedder["kwargs"]["width"] == 128
            assert spec.embedder["kwargs"]["depth"] == (4 if dataset == "tiny_imagenet" else 3)
            if "iid" in method:  # the paper pool: full-width ResNet-18-IN, the iid_pool recipe (40 epochs)
                assert spec.iid.pool.model == {"name": "resnet18_cifar", "kwargs": {"norm": "instance"}}
                assert spec.iid.pool.recipe["epochs"] == 40 and spec.iid.pool.size == 10


def test_idm_paper_flags_follow_command_txt():
    methods = {ds: compose_cfg("distill", [*BASE, "method=idm", f"dataset={ds}"]).method
               for ds in ("cifar10", "cifar100", "tiny_imagenet")}

    def spec(ds, ipc):
        return DistributionSpec.from_cfg(methods[ds], ipc)

    assert [spec("cifar10", i).ce_weight for i in (1, 10, 50)] == [0.5, 0.5, 0.1]
    assert [spec("cifar100", i).ce_weight for i in (1, 10, 50)] == [0.5, 0.1, 0.1]
    assert [spec("tiny_imagenet", i).ce_weight for i in (1, 10, 50)] == [0.5, 0.5, 0.8]
    s1 = spec("cifar10", 1)
    assert s1.batch_real == 5000 and s1.queue.push_every == 5 and s1.lr == 0.2
    assert spec("cifar100", 10).queue.train_steps == 50 and spec("cifar10", 10).queue.train_steps == 10


def test_command_line_overrides_beat_paper_settings():
    cfg = compose_cfg("distill", [*BASE, "method=dm", "dataset=cifar10", "method.iterations=7"])
    assert DistributionSpec.from_cfg(cfg.method, 10).iterations == 7


def test_pool_recipes_are_the_squeeze_recipe_options():
    """The pool members are ordinary teacher-cache entries: `reta-squeeze recipe=iid_pool` builds the same key."""
    from reta.synthesis.dm.pretrained_pool import member_config
    from reta.training.teacher_cache import teacher_entry

    cfg = compose_cfg("distill", [*BASE, "method=dm_iid", "dataset=cifar10"])
    spec = DistributionSpec.from_cfg(cfg.method, 10)
    by_hand = compose_cfg("squeeze", [*BASE, "dataset=cifar10", "model=resnet18_cifar_in", "recipe=iid_pool", "seed=3"])
    assert teacher_entry(member_config(cfg, spec.iid.pool, 3)) == teacher_entry(by_hand)
    cpu = compose_cfg("distill", [*BASE, "method=dm_iid"])
    cpu_spec = DistributionSpec.from_cfg(cpu.method, 10)
    by_hand = compose_cfg("squeeze", [*BASE, "model=resnet18_cifar_in_c16", "recipe=iid_pool_cpu", "seed=1"])
    assert teacher_entry(member_config(cpu, cpu_spec.iid.pool, 1)) == teacher_entry(by_hand)

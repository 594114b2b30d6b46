"""Every registered backbone builds through timm and exposes features of the advertised size."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from omegaconf import OmegaConf

from reta.errors import RetaError
from reta.models import build_model, features, num_features

from helpers import CONF_DIR

REGISTERED = ["convnet", "convnet_d3", "convnet_d3_bn", "convnet_d4", "convnet_d5", "convnet_tiny",
              "resnet10_cifar", "resnet18_cifar", "resnet50_cifar", "resnet101_cifar",
              "shufflenet_v2_x0_5_cifar", "shufflenet_v2_x1_0", "densenet121_cifar", "mobilenetv2_100_cifar"]


@pytest.mark.parametrize("name", REGISTERED)
def test_registered_with_timm(name):
    assert timm.is_model(name)
    size = 32 if not name.endswith(("d4", "d5")) else (64 if name.endswith("d4") else 128)
    model = timm.create_model(
        name, num_classes=7, in_chans=3, **({"img_size": size} if name.startswith("convnet") else {})
    )
    model.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        f = features(model, x)
        logits = model(x)
    assert f.shape == (2, num_features(model))
    assert logits.shape == (2, 7)
    assert torch.allclose(model.forward_head(model.forward_features(x)), logits, atol=1e-5)


@pytest.mark.parametrize(
    "cfg_name", sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml") if p.stem != "timm")
)
def test_model_configs_build(cfg_name):
    cfg = OmegaConf.load(Path(CONF_DIR) / "model" / f"{cfg_name}.yaml")
    depth = cfg.kwargs.get("depth", 0) if cfg.kwargs else 0
    size = 64 if (cfg.name in ("resnet18", "resnet50", "resnet101") or depth >= 4) else 28
    model = build_model(cfg, num_classes=10, in_chans=1, img_size=size).eval()
    with torch.no_grad():
        f = features(model, torch.randn(2, 1, size, size))
    assert f.shape == (2, num_features(model))


def test_cifar_mobilenetv2_downsamples_by_8_where_timms_downsamples_by_32():
    x = torch.randn(2, 1, 28, 28)
    cifar = timm.create_model("mobilenetv2_100_cifar", num_classes=10, in_chans=1).eval()
    imagenet = timm.create_model("mobilenetv2_100", num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        assert cifar.forward_features(x).shape[-2:] == (4, 4)
        assert imagenet.forward_features(x).shape[-2:] == (1, 1)
    assert [i["reduction"] for i in cifar.feature_info] == [1, 1, 2, 4, 8]


def test_convnet_feature_size_and_norms():
    for norm, kind in (("batch", torch.nn.BatchNorm2d), ("instance", torch.nn.GroupNorm)):
        m = timm.create_model("convnet", num_classes=10, in_chans=1, depth=3, width=16, norm=norm, img_size=28)
        assert m.num_features == 16 * 3 * 3
        assert any(isinstance(x, kind) for x in m.modules())
    m = timm.create_model("convnet", num_classes=10, in_chans=1, depth=3, width=16, norm="none", img_size=28)
    assert not any(isinstance(x, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)) for x in m.modules())


def test_dc_convnet_pads_28px_to_128x4x4_features():
    """The DC protocol's ConvNet (conf/model/convnet_d3_dc.yaml): padding 3 on the first conv of a 1-channel net."""
    cfg = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "model" / "convnet_d3_dc.yaml"))
    m = build_model(cfg, 10, 1, 28)
    x = torch.randn(2, 1, 28, 28)
    assert m.features[0].padding == (3, 3)
    assert tuple(m.forward_features(x).shape) == (2, 128, 4, 4)
    assert tuple(features(m, x).shape) == (2, 128 * 4 * 4) and m.num_features == 128 * 4 * 4
    assert isinstance(m.features[1], torch.nn.GroupNorm) and m.features[1].num_groups == 128
    assert isinstance(m.features[3], torch.nn.AvgPool2d)
    plain = build_model({"name": "convnet", "kwargs": {"depth": 3, "width": 128}}, 10, 1, 28)
    assert plain.features[0].padding == (1, 1) and plain.num_features == 128 * 3 * 3  # default unchanged
    assert build_model(cfg, 10, 3, 32).features[0].padding == (1, 1)  # the rule pads 3 only on one channel
    with pytest.raises(RetaError, match="first_padding"):
        build_model({"name": "convnet", "kwargs": {"first_padding": "big"}}, 10, 1, 28)


def test_cifar_resnet_has_cifar_stem():
    m = timm.create_model("resnet18_cifar", num_classes=10)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, torch.nn.Identity)
    assert m.forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 4


def test_unknown_model_and_bad_kwargs():
    with pytest.raises(RetaError, match="unknown model"):
        build_model({"name": "no_such_net_xyz"}, 10, 1, 28)
    with pytest.raises(RetaError, match="bad kwargs"):
        build_model({"name": "convnet", "kwargs": {"widht": 8}}, 10, 1, 28)

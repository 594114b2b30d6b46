"""CIFAR-stem ResNets (3×3 stride-1 stem, no max-pool) built from timm's ResNet and registered with timm.

The CIFAR stem is the convention of the FADRM / CV-DD / SRe2L small-image teachers and students
[code: Jiacheng8/CV-DD `squeeze/` models; VILA-Lab/SRe2L `SRe2L/*small_dataset/` torchvision resnet18 with
conv1 3×3/s1 and maxpool = Identity; docs/methods.md §2]. We take timm's ``ResNet`` (block layout, init,
``forward_features``/``forward_head``) and swap its stem, instead of re-implementing the blocks.
Layer names follow timm (``fc``, ``downsample``); importing third-party checkpoints needs a key map.
"""

from __future__ import annotations

from timm.models import register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from reta.models.convnet import strip_timm_kwargs

_LAYOUTS = {
    "resnet10_cifar": (BasicBlock, (1, 1, 1, 1)),
    "resnet18_cifar": (BasicBlock, (2, 2, 2, 2)),
    "resnet50_cifar": (Bottleneck, (3, 4, 6, 3)),
    "resnet101_cifar": (Bottleneck, (3, 4, 23, 3)),
}


class _InstanceNorm(nn.GroupNorm):
    """Instance norm with affine parameters, as GroupNorm(C, C) (IID's ResNet-18-IN, docs/methods.md §6.3)."""

    def __init__(self, num_channels: int, **_: object) -> None:
        super().__init__(num_channels, num_channels, affine=True)


def resnet_cifar(
    name: str,
    num_classes: int = 10,
    in_chans: int = 3,
    norm: str = "batch",
    stem_width: int = 64,
    drop_rate: float = 0.0,
    channels: tuple[int, ...] | list[int] = (64, 128, 256, 512),
) -> ResNet:
    """A CIFAR-stem ResNet of layout ``name`` (one of ``_LAYOUTS``), BatchNorm or instance norm.

    ``channels``: widths of the four stages (default: the standard 64-128-256-512; the 3×3 stem stays 64 wide, as
    timm builds it). Narrower stages give a cheap same-topology network, e.g. IID's CPU-scale pool.
    """
    if name not in _LAYOUTS:
        raise ValueError(f"unknown CIFAR ResNet {name!r}; valid: {', '.join(_LAYOUTS)}")
    if norm not in ("batch", "instance"):
        raise ValueError(f"unknown norm {norm!r}; valid: batch, instance")
    block, layers = _LAYOUTS[name]
    norm_layer = nn.BatchNorm2d if norm == "batch" else _InstanceNorm
    model = ResNet(
        block=block,
        layers=layers,
        num_classes=num_classes,
        in_chans=in_chans,
        stem_width=stem_width,
        norm_layer=norm_layer,
        drop_rate=drop_rate,
        channels=tuple(int(c) for c in channels),
    )
    model.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.feature_info[0]["reduction"] = 1
    return model


def _factory(name: str):
    def build(pretrained: bool = False, **kwargs) -> ResNet:
        if pretrained:
            raise ValueError(f"{name} has no pretrained weights in reta; train it with reta-squeeze")
        kwargs = strip_timm_kwargs(kwargs)
        kwargs.pop("img_size", None)  # resolution-agnostic (global pooling)
        return resnet_cifar(name, **kwargs)

    build.__name__ = name
    build.__doc__ = f"CIFAR-stem {name.split('_')[0]} (3×3/s1 stem, no max-pool)."
    return build


for _name in _LAYOUTS:
    register_model(_factory(_name))


def densenet121_cifar_model(num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0):
    """DenseNet-121 (growth 32, blocks 6-12-24-16) with the CIFAR stem: 3×3/s1 conv0, no pool0
    (the FADRM CIFAR-100 teacher pool's DenseNet121, docs/methods.md §2), from timm's DenseNet."""
    from timm.models.densenet import DenseNet

    model = DenseNet(
        growth_rate=32, block_config=(6, 12, 24, 16), num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate
    )
    model.features.conv0 = nn.Conv2d(
        in_chans, model.features.conv0.out_channels, kernel_size=3, stride=1, padding=1, bias=False
    )
    model.features.pool0 = nn.Identity()
    return model


@register_model
def densenet121_cifar(pretrained: bool = False, **kwargs):
    """CIFAR-stem DenseNet-121 (3×3/s1 stem, no max-pool)."""
    if pretrained:
        raise ValueError("densenet121_cifar has no pretrained weights in reta")
    kwargs = strip_timm_kwargs(kwargs)
    kwargs.pop("img_size", None)
    return densenet121_cifar_model(**kwargs)

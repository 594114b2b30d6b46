"""ShuffleNetV2 registered with timm (timm has no ShuffleNet), built from torchvision's implementation.

FADRM+'s teacher set and the cross-architecture pool use ShuffleNetV2 (docs/methods.md §2, §3.8). We wrap torchvision's
``ShuffleNetV2`` (blocks, init) and add timm's feature interface (``forward_features`` / ``forward_head`` /
``num_features``), ``in_chans`` and a CIFAR option (stride-1 stem without max-pool, as the FADRM CIFAR models).
"""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn
from torchvision.models import shufflenetv2 as tv

from reta.models.convnet import strip_timm_kwargs

_WIDTHS = {
    "0_5": ([4, 8, 4], [24, 48, 96, 192, 1024]),
    "1_0": ([4, 8, 4], [24, 116, 232, 464, 1024]),
}


class ShuffleNetV2(nn.Module):
    """torchvision ShuffleNetV2 with timm's feature interface; ``cifar_stem`` = 3×3/s1 stem and no max-pool."""

    def __init__(
        self, width: str = "1_0", num_classes: int = 1000, in_chans: int = 3, cifar_stem: bool = False,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if width not in _WIDTHS:
            raise ValueError(f"unknown ShuffleNetV2 width {width!r}; valid: {', '.join(_WIDTHS)}")
        repeats, channels = _WIDTHS[width]
        net = tv.ShuffleNetV2(repeats, channels, num_classes=max(num_classes, 1))
        stem_out = channels[0]
        net.conv1 = nn.Sequential(
            nn.Conv2d(in_chans, stem_out, 3, 1 if cifar_stem else 2, 1, bias=False),
            nn.BatchNorm2d(stem_out),
            nn.ReLU(inplace=True),
        )
        if cifar_stem:
            net.maxpool = nn.Identity()
        self.net = net
        self.num_classes = num_classes
        self.num_features = channels[-1]
        self.drop_rate = drop_rate
        if num_classes <= 0:
            self.net.fc = nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        return n.conv5(n.stage4(n.stage3(n.stage2(n.maxpool(n.conv1(x))))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean([2, 3])
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.net.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.net.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _factory(name: str, width: str, cifar: bool):
    def build(pretrained: bool = False, **kwargs) -> ShuffleNetV2:
        if pretrained:
            raise ValueError(f"{name}: no pretrained weights in reta")
        kwargs = strip_timm_kwargs(kwargs)
        kwargs.pop("img_size", None)
        return ShuffleNetV2(width=width, cifar_stem=cifar, **kwargs)

    build.__name__ = name
    build.__doc__ = f"ShuffleNetV2 x{width.replace('_', '.')}{' (CIFAR stem)' if cifar else ''}, torchvision blocks."
    return build


for _w in _WIDTHS:
    register_model(_factory(f"shufflenet_v2_x{_w}", _w, False))
    register_model(_factory(f"shufflenet_v2_x{_w}_cifar", _w, True))

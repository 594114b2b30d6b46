"""The ConvNet family of the dataset-distillation literature, registered with timm.

Architecture [code: VICO-UoE/DatasetCondensation `networks.py` `ConvNet`, restated in docs/methods.md §5.2/§6.1]:
``depth`` blocks of conv3x3(width, padding 1) → norm → ReLU → 2×2 average pool, then flatten → linear.
``first_padding`` pads the first convolution differently: ``"dc"`` is the reference's rule (padding 3 on
single-channel inputs, so a 28-px image is seen as 32 px: 28 → 32 → 16 → 8 → 4 and ``128·4·4`` features; padding 1
otherwise), an integer pads by that many pixels.
``norm='instance'`` is ``GroupNorm(width, width)`` (the DM/DC "instancenorm"), ``'batch'`` is BatchNorm2d
(required for BN-statistics matching teachers, docs/methods.md §2), ``'none'`` drops the layer.

The penultimate representation (``forward_head(..., pre_logits=True)``) is the flattened trunk output,
``width · (H / 2^depth) · (W / 2^depth)`` values — the embedding DM matches and the feature RETA's DRC/PTA use.
"""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn

NORMS = ("batch", "instance", "none")
POOLS = ("avg", "max")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; valid: {', '.join(NORMS)}")


def _first_padding(spec: int | str, in_chans: int) -> int:
    """Padding of the first convolution: an integer >= 0, or ``"dc"`` = 3 for one input channel, else 1
    [code: VICO-UoE/DatasetCondensation ``networks.py`` ``ConvNet._make_layers``]."""
    if spec == "dc":
        return 3 if in_chans == 1 else 1
    if isinstance(spec, bool) or not isinstance(spec, int) or spec < 0:
        raise ValueError(f"ConvNet first_padding must be an integer >= 0 or 'dc', got {spec!r}")
    return spec


class ConvNet(nn.Module):
    """ConvNet-D{depth}, width ``width``; see module docstring."""

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        depth: int = 3,
        width: int = 128,
        norm: str = "instance",
        pool: str = "avg",
        img_size: int = 32,
        drop_rate: float = 0.0,
        first_padding: int | str = 1,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"ConvNet depth must be >= 1, got {depth}")
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; valid: {', '.join(POOLS)}")
        if img_size + 2 * (_first_padding(first_padding, in_chans) - 1) < 2**depth:
            raise ValueError(f"img_size {img_size} too small for depth {depth}")
        pad0 = _first_padding(first_padding, in_chans)
        layers: list[nn.Module] = []
        channels, size = in_chans, img_size + 2 * (pad0 - 1)
        for d in range(depth):
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, padding=pad0 if d == 0 else 1),
                _norm(norm, width),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2),
            ]
            channels, size = width, size // 2
        self.features = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.num_features = width * size * size
        self.feature_shape = (width, size, size)
        self.drop_rate = drop_rate
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map ``[B, width, H/2^d, W/2^d]``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(x, 1)
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


#: Keys timm's ``create_model`` adds for its own pretrained-weight machinery; our factories drop them.
TIMM_INTERNAL_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def strip_timm_kwargs(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k not in TIMM_INTERNAL_KWARGS}


def _convnet(pretrained: bool, **kwargs) -> ConvNet:
    kwargs = strip_timm_kwargs(kwargs)
    if pretrained:
        raise ValueError("reta ConvNets have no pretrained weights; train a teacher with reta-squeeze")
    return ConvNet(**kwargs)


# timm's registry contract is ``fn(pretrained=False, **kwargs)``; the kwargs are forwarded to ConvNet,
# whose explicit signature rejects misspelt keys.
@register_model
def convnet(pretrained: bool = False, **kwargs) -> ConvNet:
    """ConvNet with every field from kwargs (defaults: depth 3, width 128, instance norm)."""
    return _convnet(pretrained, **kwargs)


@register_model
def convnet_d3(pretrained: bool = False, **kwargs) -> ConvNet:
    """ConvNet-3, width 128, instance norm (the DC/DM hard-label student)."""
    return _convnet(pretrained, **{"depth": 3, "width": 128, "norm": "instance", **kwargs})


@register_model
def convnet_d3_bn(pretrained: bool = False, **kwargs) -> ConvNet:
    """ConvNet-3, width 128, BatchNorm (a BN teacher for SRe2L/FADRM/RETA)."""
    return _convnet(pretrained, **{"depth": 3, "width": 128, "norm": "batch", **kwargs})


@register_model
def convnet_d4(pretrained: bool = False, **kwargs) -> ConvNet:
    """ConvNet-4 (64-px data), instance norm."""
    return _convnet(pretrained, **{"depth": 4, "width": 128, "norm": "instance", **kwargs})


@register_model
def convnet_d5(pretrained: bool = False, **kwargs) -> ConvNet:
    """ConvNet-5 (128-px data), instance norm."""
    return _convnet(pretrained, **{"depth": 5, "width": 128, "norm": "instance", **kwargs})


@register_model
def convnet_tiny(pretrained: bool = False, **kwargs) -> ConvNet:
    """Test-size ConvNet: depth 2, width 8, BatchNorm."""
    return _convnet(pretrained, **{"depth": 2, "width": 8, "norm": "batch", **kwargs})

"""CIFAR-stem MobileNetV2 built from timm's ``mobilenetv2_100`` and registered with timm.

timm's ImageNet MobileNetV2 downsamples by 32, so a 28- or 32-px image reaches the head as a 1 × 1 map. The
small-image convention [code: kuangliu/pytorch-cifar ``models/mobilenetv2.py``: "change conv1 stride 2 -> 1" and
"change stride 2 -> 1" of the 24-channel stage] keeps the stem and the 24-channel stage at stride 1, so the network
downsamples by 8 (32 px → 4 × 4). We build timm's model (blocks, init, ``forward_features``/``forward_head``) and set
those two strides, instead of re-implementing the blocks; the 3 × 3 convolutions' padding of 1 is the same at
stride 1 and 2.
"""

from __future__ import annotations

import timm
from timm.models import register_model

from reta.models.convnet import strip_timm_kwargs


@register_model
def mobilenetv2_100_cifar(pretrained: bool = False, **kwargs):
    """MobileNetV2 (width 1.0) with the CIFAR strides: stem and first 24-channel block at stride 1 (total stride 8)."""
    if pretrained:
        raise ValueError("mobilenetv2_100_cifar has no pretrained weights in reta")
    kwargs = strip_timm_kwargs(kwargs)
    kwargs.pop("img_size", None)  # resolution-agnostic (global pooling)
    model = timm.create_model("mobilenetv2_100", pretrained=False, **kwargs)
    model.conv_stem.stride = (1, 1)
    model.blocks[1][0].conv_dw.stride = (1, 1)
    for info in model.feature_info:  # the reductions timm recorded for the ImageNet strides
        info["reduction"] = max(1, info["reduction"] // (2 if info["module"] == "blocks.0" else 4))
    return model

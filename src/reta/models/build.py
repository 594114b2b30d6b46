"""Build any backbone through timm's registry, and read features through one interface.

Every reta model config is ``{name: <timm model name>, kwargs: {...}}``; reta's own backbones are registered
with timm (``reta.models.convnet``, ``reta.models.resnet_cifar``), so ``timm.create_model(name,
num_classes=…, in_chans=…)`` builds ConvNets, CIFAR-stem ResNets and any timm architecture alike.
Penultimate features come from timm's ``forward_features`` + ``forward_head(pre_logits=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import timm
import torch
from torch import nn

from reta.errors import RetaError

#: timm models (besides reta's own) that need to know the input resolution at construction time.
_NEEDS_IMG_SIZE_PREFIXES = ("vit_", "deit_", "swin", "convnet")


def _plain(cfg: Any) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover
        pass
    return dict(cfg)


def build_model(model_cfg: Mapping, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """Instantiate ``model_cfg.name`` from timm's registry with ``model_cfg.kwargs``.

    Unknown names fail with one line listing close matches; a misspelt kwarg fails in the constructor.
    """
    cfg = _plain(model_cfg)
    name = cfg.get("name")
    if not name:
        raise RetaError("model config has no 'name' (a timm model name, e.g. convnet_d3_bn or resnet18_cifar)")
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:12]
        raise RetaError(f"unknown model {name!r}; timm knows none by that name (similar: {', '.join(close) or '-'})")
    kwargs = dict(cfg.get("kwargs") or {})
    if name.startswith(_NEEDS_IMG_SIZE_PREFIXES):
        kwargs.setdefault("img_size", img_size)
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as err:
        raise RetaError(f"model {name!r}: bad kwargs {sorted(kwargs)}: {err}") from err


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features ``[B, D]`` (the classifier's input) of any timm-compatible model."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def num_features(model: nn.Module) -> int:
    """Dimension of :func:`features` for ``model``."""
    return int(model.num_features)

"""Build any backbone through timm's registry, and read features through one interface.

Every reta model config is ``{name: <timm model name>, kwargs: {...}}``; reta's own backbones are registered
with timm (``reta.models.convnet``, ``reta.models.resnet_cifar``), so ``timm.create_model(name,
num_classes=…, in_chans=…)`` builds ConvNets, CIFAR-stem ResNets and any timm architecture alike.
Penultimate features come from timm's ``forward_features`` + ``forward_head(pre_logits=True)``.

Pretrained weights go through timm's own mechanism: ``pretrained=True`` with a tagged name (``resnet18.tv_in1k`` =
torchvision's IMAGENET1K_V1 weights) downloads them via timm's hub cache; ``pretrained_file=PATH`` (offline clusters:
a state dict saved from the same timm/torchvision architecture) is read weights-only and checked by reta, then handed
to timm's ``load_pretrained`` as ``pretrained_cfg_overlay=dict(state_dict=…)`` with the classifier kept; reta's own
models, which have no timm weight config, load it strictly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from timm.models import get_pretrained_cfg
from torch import nn

from reta.errors import RetaError
from reta.models.weights import read_state_dict
from reta.utils.config import plain

#: timm models (besides reta's own) that need to know the input resolution at construction time.
_NEEDS_IMG_SIZE_PREFIXES = ("vit_", "deit_", "swin", "convnet")


def build_model(
    model_cfg: Mapping,
    num_classes: int,
    in_chans: int,
    img_size: int,
    pretrained: bool = False,
    pretrained_file: str | None = None,
) -> nn.Module:
    """Instantiate ``model_cfg.name`` from timm's registry with ``model_cfg.kwargs``.

    Unknown names fail with one line listing close matches; a misspelt kwarg fails in the constructor.
    ``pretrained``: timm's pretrained weights of the (tagged) name; their classifier must have ``num_classes``
    outputs (timm would otherwise silently re-initialise it). ``pretrained_file``: the same, from a local file
    (read weights-only and checked by :func:`reta.models.weights.read_state_dict`, then timm's
    ``pretrained_cfg_overlay``, or a strict ``load_state_dict`` for reta's own models); a head of another size fails
    to load.
    """
    cfg = dict(plain(model_cfg))
    name = cfg.get("name")
    if not name:
        raise RetaError("model config has no 'name' (a timm model name, e.g. convnet_d3_bn or resnet18_cifar)")
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:12]
        raise RetaError(f"unknown model {name!r}; timm knows none by that name (similar: {', '.join(close) or '-'})")
    kwargs = dict(cfg.get("kwargs") or {})
    if name.startswith(_NEEDS_IMG_SIZE_PREFIXES):
        kwargs.setdefault("img_size", img_size)
    own_weights = None
    if pretrained_file:
        path = Path(pretrained_file).expanduser()
        state = read_state_dict(path, f"model {name!r}: pretrained_file {path}")
        if get_pretrained_cfg(name) is None:  # a reta model (no timm weight machinery): a strict load below
            own_weights, pretrained = state, False
        else:  # timm adapts the dict (its filter_fn); num_classes keeps the file's classifier (else timm drops it)
            kwargs["pretrained_cfg_overlay"] = dict(state_dict=state, num_classes=num_classes)
            pretrained = True
    elif pretrained:
        cfg_classes = pretrained_classes(name)
        if cfg_classes is not None and cfg_classes != num_classes:
            raise RetaError(
                f"model {name!r}: its pretrained weights have a {cfg_classes}-class head but the dataset has "
                f"{num_classes} classes; train the teacher (teacher.pretrained=false) or pass teacher.checkpoint"
            )
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)
        if own_weights is not None:
            model.load_state_dict(own_weights, strict=True)
        return model
    except TypeError as err:
        raise RetaError(f"model {name!r}: bad kwargs {sorted(kwargs)}: {err}") from err
    except ValueError as err:  # a constructor rejecting a value (e.g. ConvNet norm, first_padding)
        raise RetaError(f"model {name!r}: {err}") from err
    except RuntimeError as err:  # load_state_dict(strict=True) of a file that does not fit
        raise RetaError(f"model {name!r}: pretrained weights do not fit ({str(err).splitlines()[0][:300]})") from err
    except OSError as err:  # no network / no hub cache
        raise RetaError(
            f"model {name!r}: cannot fetch its pretrained weights ({str(err).splitlines()[0][:200]}); offline, "
            "save them once and pass teacher.pretrained_file=PATH"
        ) from err


def pretrained_classes(name: str) -> int | None:
    """Classifier size of timm's pretrained config for ``name`` (None when timm has none)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return None if cfg is None or cfg.num_classes is None else int(cfg.num_classes)


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features ``[B, D]`` (the classifier's input) of any timm-compatible model."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def num_features(model: nn.Module) -> int:
    """Dimension of :func:`features` for ``model``."""
    return int(model.num_features)

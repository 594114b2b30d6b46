"""Build any backbone through timm's registry, and read features through one interface.

Every reta model config is ``{name: <timm model name>, kwargs: {...}}``; reta's own backbones are registered
with timm (``reta.models.convnet``, ``reta.models.resnet_cifar``), so ``timm.create_model(name,
num_classes=…, in_chans=…)`` builds ConvNets, CIFAR-stem ResNets and any timm architecture alike.
Penultimate features come from timm's ``forward_features`` + ``forward_head(pre_logits=True)``.

Pretrained weights go through timm's own mechanism: ``pretrained=True`` with a tagged name (``resnet18.tv_in1k`` =
torchvision's IMAGENET1K_V1 weights) downloads them via timm's hub cache; ``pretrained_file=PATH`` is timm's
``pretrained_cfg_overlay=dict(file=PATH)`` for offline clusters (a state dict saved from the same timm/torchvision
architecture), loaded by timm's ``load_pretrained`` with the classifier kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
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
    (timm's ``pretrained_cfg_overlay``); a head of another size fails to load.
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
    if pretrained_file:
        path = Path(pretrained_file).expanduser()
        if not path.is_file():
            raise RetaError(f"model {name!r}: pretrained_file {path} does not exist")
        # num_classes in the overlay keeps the file's classifier (timm drops a head whose size differs from the cfg's)
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path), num_classes=num_classes)
        pretrained = True
    elif pretrained:
        cfg_classes = pretrained_classes(name)
        if cfg_classes is not None and cfg_classes != num_classes:
            raise RetaError(
                f"model {name!r}: its pretrained weights have a {cfg_classes}-class head but the dataset has "
                f"{num_classes} classes; train the teacher (teacher.pretrained=false) or pass teacher.checkpoint"
            )
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)
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


def write_weight_file(name: str, num_classes: int, path: str | Path, in_chans: int = 3, seed: int = 0) -> Path:
    """Save the state dict of a freshly initialised ``name`` (seeded) to ``path``: a stand-in for a downloaded
    weight file where no network is available (the paper-grid smoke run, tests)."""
    torch.manual_seed(int(seed))
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path

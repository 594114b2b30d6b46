"""Backbones: importing this package registers reta's models with timm."""

from reta.models import convnet, mobilenet_cifar, resnet_cifar, shufflenet  # noqa: F401  (registration side effect)
from reta.models.build import build_model, features, num_features

__all__ = ["build_model", "features", "num_features"]

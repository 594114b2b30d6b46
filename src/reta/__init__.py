"""reta: dataset distillation with PyTorch Lightning + Hydra (RETA, SRe2L, FADRM/FADRM+, DM/IDM/IID, baselines)."""

__version__ = "0.1.0"

from reta.utils.per_dataset import register_fallbacks as _register_fallbacks

_register_fallbacks()  # conf/method/per_dataset/_fallback.yaml links, before any config is composed

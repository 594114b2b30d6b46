"""Config helpers: plain containers, output dir resolution, required-key checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from reta.errors import RetaError


def plain(cfg: Any) -> Any:
    """A resolved plain ``dict``/``list`` copy of an OmegaConf node (anything else is returned as is)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def planned_output_dir(cfg: DictConfig) -> Path:
    """The run's output dir, not created: Hydra's job dir when Hydra runs the job (multirun jobs get their own), else
    ``cfg.paths.output_dir``; ``/<output_subdir>`` appended when a sub-run sets it."""
    path = Path(cfg.paths.output_dir)
    try:
        from hydra.core.hydra_config import HydraConfig

        run_dir = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None) if HydraConfig.initialized() else None
        if run_dir:
            path = Path(run_dir)
    except ImportError:  # pragma: no cover
        pass
    if cfg.get("output_subdir"):
        path = path / str(cfg.output_subdir)
    return path


def output_dir(cfg: DictConfig) -> Path:
    """:func:`planned_output_dir`, created if missing."""
    path = planned_output_dir(cfg)
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_positive_int(value: Any, name: str) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError) as err:
        raise RetaError(f"{name} must be a positive integer, got {value!r}") from err
    if v <= 0 or v != value:
        raise RetaError(f"{name} must be a positive integer, got {value!r}")
    return v


def check_keys(cls: type, d: Any, where: str) -> dict:
    """``d`` (a config mapping or None) as a plain dict whose keys are all fields of dataclass ``cls``; otherwise one
    line naming the unknown keys and the valid ones."""
    d = dict(plain(d) or {})
    valid = cls.__dataclass_fields__
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise RetaError(f"{where}: unknown keys {unknown}; valid: {sorted(valid)}")
    return d


def dataclass_from(cls: type, d: Any, where: str) -> Any:
    """``cls(**d)`` for a config mapping (or None), keys checked by :func:`check_keys`."""
    return cls(**check_keys(cls, d, where))

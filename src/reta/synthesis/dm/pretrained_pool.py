"""IID's pool of pretrained ResNet-18 (instance norm) feature extractors, as cached squeeze runs.

IID's class-centralisation loss L_CC reads features of a frozen network *pretrained on the dataset*, drawn from a
pool [code: VincenDen/IID ``DM+ours/pre_model.py``: ResNet-18-IN, 40 epochs each, no augmentation, SGD lr 0.01,
momentum 0.9, wd 5e-4, batch 256, constant lr; 1000 models by default]. ``reta`` trains pool member ``i`` as an
ordinary teacher — :func:`reta.training.teacher_cache.get_teacher` with ``model = pool.model``,
``recipe = pool.recipe`` and
``seed = pool.seed + i`` — so each member is an entry of the teacher cache (``<cache_dir>/teachers/``), keyed by
dataset + model + recipe + seed, shared by every run that asks for the same pool and creatable by hand with
``reta-squeeze model=resnet18_cifar_in recipe=iid_pool seed=I`` (``conf/recipe/iid_pool.yaml`` holds the same recipe).
Default size 10 [recon, docs/methods.md §6.3]; all members are held in memory and one is drawn per iteration.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict
from torch import nn

from reta.errors import RetaError
from reta.utils.config import plain
from reta.utils.groups import group_option as compose_option

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class PoolSpec:
    """``method.iid.pool``: how many members, which architecture, which recipe, which seeds.

    ``train_missing``: train absent members now (cached for next time); false = use only cached members and disable
    L_CC with a warning when there are none.
    """

    size: int
    model: Any  # a conf/model option name, or a {name, kwargs} map
    recipe: Any  # a conf/recipe option name, or a map of every Recipe field
    seed: int
    train_missing: bool

    @staticmethod
    def expand_names(values: Mapping) -> dict:
        """``values`` with ``model``/``recipe`` option names replaced by their plain maps (so meta.json and the cache
        key see the values; an unknown name fails here, before any work)."""
        values = dict(values)
        for key in ("model", "recipe"):
            if key in values:
                values[key] = group_option(key, values[key])
        return values

    def validate(self) -> None:
        if int(self.size) < 1:
            raise RetaError(f"method.iid.pool.size must be >= 1, got {self.size}")

    @property
    def model_cfg(self) -> dict:
        return group_option("model", self.model)

    @property
    def recipe_cfg(self) -> dict:
        return group_option("recipe", self.recipe)


def group_option(group: str, value: Any) -> dict:
    """``value`` as a plain dict: a map is returned as is, a name is composed through Hydra
    (:func:`reta.utils.groups.group_option`)."""
    if isinstance(value, Mapping):
        return dict(plain(value))
    return compose_option(group, value, f"method.iid.pool.{group}")


def member_config(cfg: DictConfig, spec: PoolSpec, i: int) -> DictConfig:
    """The squeeze config that trains (or finds in the cache) pool member ``i``."""
    sub = copy.deepcopy(cfg)
    # assignment, not OmegaConf.merge: a merge would mix the run's model kwargs into the pool model's
    with open_dict(sub):
        sub.model = spec.model_cfg
        sub.recipe = spec.recipe_cfg
        sub.seed = int(spec.seed) + int(i)
        sub.teacher = {"checkpoint": None, "force": False}
    return sub


def member_entries(cfg: DictConfig, spec: PoolSpec) -> list[Path]:
    """Cache directories of the pool members (existing or not)."""
    from reta.training.teacher_cache import teacher_entry

    return [teacher_entry(member_config(cfg, spec, i)) for i in range(int(spec.size))]


def get_pool(cfg: DictConfig, spec: PoolSpec, train=None, test=None) -> tuple[list[nn.Module], list[dict]]:
    """The frozen pool members (eval mode) and their teacher metas; trains missing ones when ``train_missing``.

    Returns ``([], [])`` with a warning when no member exists and training is off (L_CC is then disabled: using
    the matching ConvNet instead would be a different method, docs/methods.md §6.3).
    """
    from reta.training.teacher_cache import get_teacher

    models, metas = [], []
    entries = member_entries(cfg, spec)
    for i, entry in enumerate(entries):
        if not entry.exists() and not spec.train_missing:
            continue
        if not entry.exists():
            log.info("IID pool: training member %d/%d (%s, %d epochs) -> %s", i + 1, len(entries),
                     spec.model_cfg.get("name"), spec.recipe_cfg.get("epochs"), entry)
        model, meta = get_teacher(member_config(cfg, spec, i), train, test)
        models.append(model.eval().requires_grad_(False))
        metas.append({"key": entry.name, "seed": int(spec.seed) + i, "test_acc": meta.get("test_acc")})
    if not models:
        msg = (f"IID pool: none of the {len(entries)} members is cached and pool.train_missing=false: "
               "L_CC is disabled for this run")
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        log.warning(msg)
    return models, metas

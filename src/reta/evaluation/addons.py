"""Student add-ons: extra scores that every student a student protocol trains also gets, for the distilled set and
the random subset alike (corruption robustness: :mod:`reta.evaluation.robustness`).

A top-level config group plugs one in (``conf/robustness/*.yaml``)::

    enabled: false      # on with robustness.enabled=true
    addon: {_target_: reta.evaluation.robustness.CorruptedTests, _partial_: true}
    ...                 # the add-on's own settings (``spec``: the group without ``enabled`` and ``addon``)

The ``addon`` target is ``fn(spec, test, dataset_cfg, cache_dir)``, called once per evaluation on its test split.
The built object has ``name``, ``score(model) -> dict`` (merged into the student's run record; called after the fit)
and ``summarize(runs) -> dict`` (stored as ``sets.<set>.<name>`` in ``metrics.json``). The ``addon`` target may carry
``preflight = fn(spec)``, run with no data before anything is written. A protocol declares whether its evaluator
applies add-ons (``student_addons: true``: ``kd``, ``hard``); an enabled add-on under one that declares ``false`` is
refused in preflight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf
from torch import nn

from reta.data.base import ImageDataset
from reta.errors import RetaError
from reta.utils.config import plain
from reta.utils.plugins import plugin_function

#: the keys of an add-on group that declare how it plugs in, not settings of the add-on
ADDON_KEYS = ("enabled", "addon")


class StudentAddon(Protocol):
    name: str

    def score(self, model: nn.Module) -> dict: ...

    def summarize(self, runs: list[dict]) -> dict: ...


def enabled_addons(cfg: DictConfig) -> dict[str, dict]:
    """``{group: its config}`` of every top-level group that declares an ``addon`` and has ``enabled: true``."""
    found = {}
    for key in cfg:
        node = OmegaConf.select(cfg, str(key), throw_on_resolution_failure=False)  # a scalar may need Hydra's resolver
        if isinstance(node, DictConfig) and "addon" in node and node.get("enabled"):
            found[str(key)] = plain(node)
    return found


def _factory(group: str, node: Mapping) -> Callable:
    return plugin_function(node["addon"], f"{group}.addon", "fn(spec, test, dataset_cfg, cache_dir) -> add-on "
                           "(e.g. reta.evaluation.robustness.CorruptedTests)")


def addon_spec(node: Mapping) -> dict:
    return {k: v for k, v in node.items() if k not in ADDON_KEYS}


def check_addons(cfg: DictConfig) -> None:
    """Preflight: the protocol must declare ``student_addons`` (and ``true`` when an add-on is on); each enabled
    add-on's target loads and its own ``preflight(spec)`` passes."""
    declared = cfg.protocol.get("student_addons")
    if not isinstance(declared, bool):
        raise RetaError("protocol.student_addons: missing; a protocol config declares whether its evaluator gives "
                        "every trained student the student add-ons (true | false)")
    for group, node in enabled_addons(cfg).items():
        if not declared:
            raise RetaError(f"{group}.enabled=true: protocol {cfg.protocol.get('name')} trains no students that take "
                            f"add-ons (student_addons: false); use a student protocol (kd, hard)")
        fn = _factory(group, node)
        check = getattr(getattr(fn, "func", fn), "preflight", None)
        if check is not None:
            check(addon_spec(node))


def build_addons(cfg: DictConfig, test: ImageDataset, dataset_cfg: Mapping, cache_dir: str | Path) -> list[Any]:
    """The enabled add-ons, built once per evaluation on its test split (before any student trains)."""
    return [_factory(group, node)(addon_spec(node), test, dataset_cfg, cache_dir)
            for group, node in enabled_addons(cfg).items()]


def score_student(addons: list[Any], model: nn.Module) -> dict:
    """Every add-on's scores of one trained student, merged (one key per add-on)."""
    out: dict = {}
    for addon in addons:
        out.update(addon.score(model))
    return out


def attach_summaries(metrics: dict, sets: Mapping[str, list[dict]], addons: list[Any]) -> dict:
    """Adds each add-on's summary to every summarised set of ``metrics`` whose runs it scored; returns ``metrics``."""
    for addon in addons:
        for name, runs in sets.items():
            if runs and all(addon.name in r for r in runs):
                metrics["sets"][name][addon.name] = addon.summarize(runs)
    return metrics

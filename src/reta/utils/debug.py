"""``debug=<option>`` applied last: the ``debug`` block of the composed config is merged over it after everything else.

Why code and not the defaults list: Hydra composes the ``debug`` group at its place in ``squeeze.yaml``'s defaults,
so ``method/per_dataset/<method>_<dataset>`` (later in distill/pipeline.yaml) and a command-line ``+experiment=…``
(appended after ``_self_``) override whatever the debug option set — a smoke run then trains the paper's 300 student
epochs. Hydra has no "compose this group last" setting that keeps ``+experiment=`` working, so a debug option that must
win puts its values under ``debug:`` and the entry points call :func:`apply_debug` on the composed config::

    debug:
      name: smoke
      last: {seeds: [0], protocol: {epochs: 1}}            # merged over the root, keys that exist only
      method:                                               # merged over `method` by its family
        bn: {stages: {budgets: 2}}                          # an int for a list of ints: every entry
        dm: {iterations: 2}

Only keys the composed config already has are set (a debug option shrinks what is there; it never adds a callback or
a section a method does not have). Applying it twice gives the same config.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from reta.utils.config import method_family


def _merge_existing(node: DictConfig, values: dict) -> None:
    for key, value in values.items():
        if key not in node:
            continue
        current = node[key]
        if isinstance(value, dict) and isinstance(current, DictConfig):
            _merge_existing(current, value)
        elif isinstance(value, int) and not isinstance(value, bool) and OmegaConf.is_list(current) and all(
            isinstance(v, int) for v in current
        ):
            node[key] = [value] * len(current)  # e.g. stages.budgets: 2 → [2, 2, 2, 2]
        else:
            node[key] = value


def apply_debug(cfg: Any) -> Any:
    """``cfg`` with its ``debug.last`` and ``debug.method[<method family>]`` blocks merged over it (in place)."""
    if not isinstance(cfg, DictConfig):
        return cfg
    block = cfg.get("debug")
    if not isinstance(block, DictConfig):
        return cfg
    last, by_kind = ({} if block.get(k) is None else OmegaConf.to_container(block[k], resolve=True)
                     for k in ("last", "method"))
    with open_dict(cfg):
        _merge_existing(cfg, last)
        method = cfg.get("method")
        family = method_family(method)
        if family in by_kind:
            _merge_existing(method, by_kind[family])
    return cfg

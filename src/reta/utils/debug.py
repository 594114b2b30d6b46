"""``debug=<option>`` applied last: the ``debug`` block of the composed config is merged over it after everything else.

Why code and not the defaults list: Hydra composes the ``debug`` group at its place in ``squeeze.yaml``'s defaults,
so ``method/per_dataset/<method>_<dataset>`` (later in distill/pipeline.yaml) and a command-line ``+experiment=…``
(appended after ``_self_``) override whatever the debug option set — a smoke run then trains the paper's 300 student
epochs. Hydra has no "compose this group last" setting that keeps ``+experiment=`` working, so a debug option that must
win puts its values under ``debug:`` and the entry points call :func:`apply_debug` on the composed config::

    debug:
      name: smoke
      last: {seeds: [0], protocol: {epochs: 1}}            # merged over the root, keys that exist only
      method: smoke                                         # merge the method config's own `smoke` block over it

and every method config declares its shrink itself (``conf/method/fadrm.yaml``)::

    smoke:
      stages: {budgets: 2}                                  # an int for a list of ints: every entry
      init: {mipc: 4, num_crop: 2}

Only keys the composed config already has are set (a debug option shrinks what is there; it never adds a callback or
a section a method does not have). Applying it twice gives the same config.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict


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
    """``cfg`` with its ``debug.last`` block and the method's own block named by ``debug.method`` (``smoke``) merged
    over it (in place)."""
    if not isinstance(cfg, DictConfig):
        return cfg
    block = cfg.get("debug")
    if not isinstance(block, DictConfig):
        return cfg
    last = {} if block.get("last") is None else OmegaConf.to_container(block["last"], resolve=True)
    shrink_key = block.get("method")
    with open_dict(cfg):
        _merge_existing(cfg, last)
        method = cfg.get("method")
        if isinstance(shrink_key, str) and isinstance(method, DictConfig) \
                and isinstance(method.get(shrink_key), DictConfig):
            _merge_existing(method, OmegaConf.to_container(method[shrink_key], resolve=True))
    return cfg

"""Config helpers: plain containers, output dir resolution, required-key checks."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from reta.errors import RetaError

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # per-IPC keys the command line replaced, already logged in this process


def plain(cfg: Any) -> Any:
    """A resolved plain ``dict``/``list`` copy of an OmegaConf node (anything else is returned as is)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


#: length of every config digest (:func:`config_digest`): cache keys, resume fingerprints, the set's config hash
DIGEST_LENGTH = 12


def config_digest(obj: Any) -> str:
    """The one digest of a config-like value: sha256 of its sorted-key JSON (``default=str`` for paths, dtypes …),
    the first :data:`DIGEST_LENGTH` hex digits."""
    blob = json.dumps(plain(obj), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:DIGEST_LENGTH]


def planned_output_dir(cfg: DictConfig) -> Path:
    """The run's output dir, not created: Hydra's job dir when Hydra runs the job (multirun jobs get their own), else
    ``cfg.paths.output_dir``; ``/<output_subdir>`` appended when a sub-run sets it."""
    path = Path(cfg.paths.output_dir)
    try:
        from hydra.core.hydra_config import HydraConfig

        run_dir = (
            OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None)
            if HydraConfig.initialized() else None
        )
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


def per_ipc_override(values: dict, ipc: int | None, where: str = "method") -> tuple[dict, bool]:
    """The one per-IPC rule of every method family: ``per_ipc: {<ipc>: {key: value, …}}`` — the block whose key
    equals the run's IPC (the setting published for that IPC) is merged over the top level; other IPCs run the top
    level. A key the running Hydra job's command line set (``method.lr=0.123``, :func:`command_line_keys`) is left out
    of the block, so the command line wins over a per-IPC block as it wins over every config file. Returns the merged
    plain dict (``per_ipc`` removed) and whether a block applied. The YAML files quote the keys (``"50": {…}``): a
    string key is what Hydra's command line can reach (``method.per_ipc.50.lr=0.1``, ``~method.per_ipc.50``); an
    unquoted YAML key is an int, which struct mode refuses to address."""
    values = dict(values)
    per = values.pop("per_ipc", None) or {}
    if not isinstance(per, dict) or not all(str(k).isdigit() and isinstance(v, dict) for k, v in per.items()):
        raise RetaError(f"{where}.per_ipc must map IPC values to override blocks, e.g. {{1: {{lr: 0.1}}}}, got {per!r}")
    # keys are IPCs written as strings ("50", so a command line can address them: method.per_ipc.50.lr=…) or ints
    # (Python callers, older YAML); blocks of the same IPC under both spellings are merged in order
    blocks = [OmegaConf.create(v) for k, v in per.items() if ipc is not None and int(k) == int(ipc)]
    block = plain(OmegaConf.merge(*blocks)) if blocks else None
    if not block:
        return values, False
    block = _without_command_line_keys(block, command_line_keys(where), ipc, where)
    return plain(OmegaConf.merge(OmegaConf.create(values), OmegaConf.create(block))), True


def command_line_keys(where: str = "method") -> set[str]:
    """The keys under ``<where>.`` that the running Hydra job's command line set, relative to ``where`` (``lr``,
    ``init.band``): Hydra's task overrides (``hydra.overrides.task``, which also carry a multirun job's swept values)
    read by Hydra's own override parser; keys inside ``per_ipc`` are left out (they edit the blocks themselves). Empty
    outside a Hydra job (library use: nothing came from a command line)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.override_parser.overrides_parser import OverridesParser

        task = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    except (ImportError, ValueError):  # pragma: no cover - no Hydra, or no job config
        return set()
    prefix = f"{where}."
    keys = {o.key_or_group[len(prefix):] for o in OverridesParser.create().parse_overrides(task)
            if o.package is None and o.key_or_group.startswith(prefix)}
    return {k for k in keys if k != "per_ipc" and not k.startswith("per_ipc.")}


def _dotted(block: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in block.items():
        out.extend(_dotted(value, f"{prefix}{key}.") if isinstance(value, dict) and value else [f"{prefix}{key}"])
    return out


def _without_command_line_keys(block: dict, given: set[str], ipc: int, where: str) -> dict:
    """``block`` without the dotted keys the command line set (a key, a key above it — ``method.init`` covers the
    block's ``init.band`` — or a key below it); each one is logged once per process with the way to change the block
    instead (``<where>.per_ipc.<ipc>.<key>=…``)."""
    dropped = [k for k in _dotted(block)
               if any(k == g or k.startswith(g + ".") or g.startswith(k + ".") for g in given)]
    if not dropped:
        return block
    out = OmegaConf.create(block)
    for key in dropped:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(out, parent) if parent else out
        node.pop(leaf)
        message = (f"{where}.per_ipc.{ipc} sets {key}; the command line's {where}.{key} wins at IPC {ipc} (to change "
                   f"the block instead, set {where}.per_ipc.{ipc}.{key})")
        if message not in _WARNED:  # the config is parsed more than once per run
            _WARNED.add(message)
            log.info(message)
    return plain(out)


"""Options of a Hydra config group, composed through Hydra (never read from disk behind its back).

``method.teachers: [convnet_d3_w32, …]`` and the DM family's ``iid.pool.model`` / ``iid.pool.recipe`` name options of
the ``model`` and ``recipe`` groups. :func:`group_option` composes such an option with Hydra's compose API: inside a
running Hydra app it uses the app's config search path (so options a user adds through ``hydra.searchpath`` are
found); in library use and tests it initialises Hydra on the packaged configs (``reta.conf``) for the call.
:func:`composed_config` composes a whole primary config (``evaluate`` with ``protocol=dc``) the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import OmegaConf

from reta.errors import RetaError


@contextlib.contextmanager
def _hydra() -> Iterator[GlobalHydra]:
    gh = GlobalHydra.instance()
    if gh.is_initialized():
        yield gh
        return
    with initialize_config_module(config_module="reta.conf", version_base="1.3"):
        yield GlobalHydra.instance()


def group_options(group: str) -> list[str]:
    """The option names of config group ``group`` (sorted)."""
    with _hydra() as gh:
        return sorted(gh.config_loader().get_group_options(group))


def group_option(group: str, name: str, where: str) -> dict:
    """Option ``name`` of config group ``group`` as a plain dict; an unknown name → one line naming the valid ones."""
    options = group_options(group)
    if not isinstance(name, str) or name not in options:
        raise RetaError(f"{where}: unknown {group} config {name!r}; valid: {', '.join(options)}")
    return composed_config(None, [f"+{group}={name}"], [group], where)[group]


def composed_config(config_name: str | None, overrides: list[str], keys: list[str], where: str) -> dict:
    """The ``keys`` (top-level nodes, resolved) of the primary config ``config_name`` (None: no primary config)
    composed with ``overrides``: what a command given those overrides would run with, e.g. ``evaluate`` with
    ``protocol=dc`` → its ``protocol`` and ``student``; a composition error → one line naming ``where``."""
    with _hydra():
        try:
            cfg = compose(config_name=config_name, overrides=list(overrides))
        except HydraException as err:  # pragma: no cover - a broken config file
            raise RetaError(f"{where}: cannot compose {' '.join(overrides)} ({str(err).splitlines()[0]})") from None
    return {k: OmegaConf.to_container(cfg[k], resolve=True) for k in keys}

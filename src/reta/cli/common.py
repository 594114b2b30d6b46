"""What every entry point shares: a one-line check of config-group choices before Hydra composes, the stage's
preflight checks before Hydra writes its run dir (:class:`Preflight`), and the mapping of :class:`RetaError` to one
line on stderr + exit status 2."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from reta.errors import RetaError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def group_options(group: str) -> list[str]:
    d = CONF_DIR / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def check_group_choices(argv: list[str]) -> None:
    """Reject ``group=option`` overrides whose option does not exist, naming the valid ones (one line, exit 2).

    Hydra's own message for this spans many lines; researchers mistyping ``dataset=fmnist`` deserve one.
    """
    for arg in argv:
        if "=" not in arg or arg.startswith(("hydra.", "hydra/", "+", "~", "-")):
            continue
        key, value = arg.split("=", 1)
        group = key.split("@", 1)[0].lstrip("+")
        if (
            "." in group or not (CONF_DIR / group).is_dir() or "," in value
            or value.startswith(("$", "choice(", "range(", "glob("))
        ):
            continue
        options = group_options(group)
        if value not in options and value != "null":
            print(f"error: unknown {group} {value!r}; valid: {', '.join(options)}", file=sys.stderr)
            sys.exit(2)


def _preflight_checks(config_name: str | None) -> list[Callable]:
    from reta import distill, evaluate, experts, pipeline, squeeze

    return {"squeeze": [squeeze.preflight], "distill": [distill.preflight], "evaluate": [evaluate.preflight],
            "pipeline": [pipeline.preflight], "experts": [experts.preflight]}.get(config_name or "", [])


class Preflight(Callback):
    """Hydra callback (``hydra.callbacks.preflight`` in ``conf/hydra/default.yaml``): run the stage's ``preflight(cfg,
    out)`` in ``on_run_start``, which Hydra calls after composing the config and before it creates the run dir, saves
    ``.hydra/`` and opens the job log (``hydra.core.utils.run_job``). A refused run therefore writes nothing: one line
    on stderr, exit status 2. Multirun jobs get the same checks at the start of the stage's ``run`` (their job dirs
    are Hydra's)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        checks = _preflight_checks(kwargs.get("config_name"))
        if not checks:
            return
        hydra_cfg = HydraConfig.instance()
        previous = hydra_cfg.cfg
        hydra_cfg.set_config(config)  # so ${hydra:…} in paths resolves (run_job sets it again)
        try:
            out = Path(str(config.hydra.run.dir))
            for check in checks:
                check(config, out)
        except RetaError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        finally:
            hydra_cfg.cfg = previous


def finish_wandb() -> None:
    """Close the W&B run of this job, if one is open, so each Hydra multirun job gets its own run."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def one_line_errors(fn: Callable) -> Callable:
    """Run ``fn(cfg)`` (the ``debug`` option's block merged last, :mod:`reta.utils.debug`); a :class:`RetaError`
    becomes ``error: <message>`` on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(cfg):
        from reta.utils.debug import apply_debug

        try:
            return fn(apply_debug(cfg))
        except RetaError as err:
            logging.getLogger("reta").debug("error", exc_info=True)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        finally:
            finish_wandb()

    return wrapper

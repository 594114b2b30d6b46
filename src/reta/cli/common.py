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


def check_group_choices(argv: list[str], config_name: str | None = None) -> None:
    """Reject ``group=option`` overrides whose option does not exist, naming the valid ones (one line, exit 2), and
    with ``config_name`` a misspelt nested key of a single run (:func:`check_override_keys`).

    Hydra's own message for this spans many lines; researchers mistyping ``dataset=fmnist`` deserve one.
    """
    _check_group_options(argv)
    if config_name:
        check_override_keys(config_name, argv)


def check_override_keys(config_name: str, argv: list[str]) -> None:
    """Compose ``config_name`` with the command line's overrides once before Hydra does: an override of a key that
    does not exist (``method.iteratons=3``) is one line naming the valid keys there and exit status 2, not Hydra's
    six lines and exit 1. Multirun sweeps and Hydra's own flags (``--cfg``, ``-m`` …) are left to Hydra."""
    import re

    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if any(a.startswith("-") for a in argv):
        return
    overrides = [a for a in argv if "=" in a and not a.lstrip("+~").startswith(("hydra.", "hydra/"))]

    def composed(ovs: list[str]):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name, overrides=ovs)

    try:
        composed(overrides)
        return
    except ConfigCompositionException as err:
        found = re.match(r"Could not override '([^']+)'", str(err))
        if not found or not isinstance(err.__cause__, (ConfigAttributeError, ConfigKeyError)):
            return  # another composition problem: Hydra reports it
        key = found.group(1)
        # a map value merged into an existing map: the unknown key is inside the value (student.kwargs.patch_size)
        unknown = str(getattr(err.__cause__, "full_key", None) or key)
    except Exception:  # noqa: BLE001 - anything else is Hydra's to report, as before
        return
    bad = next(o for o in overrides if o.split("=", 1)[0] == key)
    parent = unknown.rpartition(".")[0]
    try:
        node = OmegaConf.select(composed([o for o in overrides if o != bad]), parent) if parent else None
        valid = f"; valid: {', '.join(sorted(node)) or 'none'}" if node is not None and OmegaConf.is_dict(node) else ""
    except Exception:  # noqa: BLE001
        valid = ""
    if unknown != key and unknown.startswith(key + "."):
        hint = f"{bad} merges into the existing {key}; to replace it: ~{key} +{bad}"
    else:
        hint = f"a new key is added with +{bad}"
    print(f"error: unknown key {unknown!r}{valid} ({hint})", file=sys.stderr)
    sys.exit(2)


def _check_group_options(argv: list[str]) -> None:
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
    becomes ``error: <message>`` on stderr and exit status 2 (in a multirun: the job's line, and the sweep goes on to
    its next job, :mod:`reta.cli.sweep`); SIGTERM during training one line naming ``resume=true``
    and exit status 143 (:mod:`reta.utils.signals`)."""

    @functools.wraps(fn)
    def wrapper(cfg):
        from reta.cli.sweep import in_multirun, record_failure
        from reta.utils.debug import apply_debug
        from reta.utils.signals import EXIT_SIGTERM, interrupted_line, is_sigterm

        try:
            return fn(apply_debug(cfg))
        except RetaError as err:
            logging.getLogger("reta").debug("error", exc_info=True)
            if in_multirun():  # the other jobs still run; SweepFailures reports this one at the end
                print(record_failure(str(err)), file=sys.stderr)
                return None
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except Exception as err:
            if not in_multirun():
                raise
            logging.getLogger("reta").exception("sweep job failed")  # the traceback goes to the job's log
            print(record_failure(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"),
                  file=sys.stderr)
            return None
        except SystemExit as exit_:
            if not is_sigterm(exit_):
                raise
            print(f"error: {interrupted_line()}", file=sys.stderr)
            sys.exit(EXIT_SIGTERM)
        finally:
            finish_wandb()

    return wrapper

"""``--cfg job`` as the job receives it: the composed config with the ``debug`` option's block applied last
(:mod:`reta.utils.debug`), so ``reta-distill method=sfm debug=smoke --cfg job`` shows the smoke budget the run
would use. Hydra's own ``--cfg job`` prints the composition before the entry point sees it; the entry points call
:func:`show_job_config` first and leave every other form (``--cfg hydra|all``, ``--resolve``, ``--package``,
multirun) to Hydra."""

from __future__ import annotations

from omegaconf import OmegaConf

_DELEGATE = ("--resolve", "-m", "--multirun", "-p", "--package", "--info", "-i", "--help", "-h", "--hydra-help",
             "--shell-completion", "-sc", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
             "--experimental-rerun")


def _wants_job_cfg(argv: list[str]) -> tuple[bool, list[str]]:
    """(``--cfg job`` asked for and handled here, the overrides)."""
    overrides, wants, skip = [], False, False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg in ("--cfg", "-c"):
            if i + 1 < len(argv) and argv[i + 1] == "job":
                wants, skip = True, True
                continue
            return False, []
        if arg == "--cfg=job":
            wants = True
        elif arg.split("=", 1)[0] in _DELEGATE:
            return False, []
        else:
            overrides.append(arg)
    return wants, overrides


def show_job_config(config_name: str, argv: list[str]) -> bool:
    """Print the job config for ``--cfg job`` (returns True) or do nothing (returns False)."""
    wants, overrides = _wants_job_cfg(argv)
    if not wants:
        return False
    from hydra import compose, initialize_config_module

    from reta.utils.debug import apply_debug

    with initialize_config_module(config_module="reta.conf", version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    print(OmegaConf.to_yaml(apply_debug(cfg)), end="")
    return True

"""`reta-evaluate`: see ``reta.evaluate.run``. Usage: ``reta-evaluate dataset=fashion_mnist ...`` (Hydra overrides)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from reta import evaluate
from reta.cli.common import check_group_choices, one_line_errors
from reta.cli.show import show_job_config


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
@one_line_errors
def _main(cfg: DictConfig) -> dict:
    return evaluate.run(cfg)


def main() -> None:
    check_group_choices(sys.argv[1:], "evaluate")
    if show_job_config("evaluate", sys.argv[1:]):
        return
    _main()


if __name__ == "__main__":
    main()

"""`reta-run`: see ``reta.pipeline.run``. Usage:
``reta-run dataset=fashion_mnist method=fadrm ipc=10 seeds=[0,1,2] ...`` (Hydra overrides)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from reta import pipeline
from reta.cli.common import check_group_choices, one_line_errors
from reta.cli.show import show_job_config


@hydra.main(config_path="../conf", config_name="pipeline", version_base="1.3")
@one_line_errors
def _main(cfg: DictConfig) -> dict:
    return pipeline.run(cfg)


def main() -> None:
    check_group_choices(sys.argv[1:], "pipeline")
    if show_job_config("pipeline", sys.argv[1:]):
        return
    _main()


if __name__ == "__main__":
    main()

"""`reta-distill`: see ``reta.distill.run``. Usage:
``reta-distill dataset=fashion_mnist method=fadrm ipc=10 seed=0 ...`` (Hydra overrides)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from reta import distill
from reta.cli.common import check_group_choices, one_line_errors
from reta.cli.show import show_job_config


@hydra.main(config_path="../conf", config_name="distill", version_base="1.3")
@one_line_errors
def _main(cfg: DictConfig) -> dict:
    return distill.run(cfg)


def main() -> None:
    check_group_choices(sys.argv[1:], "distill")
    if show_job_config("distill", sys.argv[1:]):
        return
    _main()


if __name__ == "__main__":
    main()

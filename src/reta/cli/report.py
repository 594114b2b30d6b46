"""`reta-report`: see ``reta.report.run``. Usage: ``reta-report inputs=[multirun/reta-evaluate] out=results``."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from reta import report
from reta.cli.common import check_group_choices, one_line_errors


@hydra.main(config_path="../conf", config_name="report", version_base="1.3")
@one_line_errors
def _main(cfg: DictConfig) -> dict:
    return report.run(cfg)


def main() -> None:
    check_group_choices(sys.argv[1:], "report")
    _main()


if __name__ == "__main__":
    main()

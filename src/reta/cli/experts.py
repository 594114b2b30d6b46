"""`reta-experts`: see ``reta.experts.run``. Usage: ``reta-experts method=mtt method.experts.num_experts=10 ...``."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from reta import experts
from reta.cli.common import check_group_choices, one_line_errors


@hydra.main(config_path="../conf", config_name="experts", version_base="1.3")
@one_line_errors
def _main(cfg: DictConfig) -> dict:
    return experts.run(cfg)


def main() -> None:
    check_group_choices(sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()

"""The sections ``reta-report`` appends after the accuracy tables: DD-Ranking scores of every set
(:mod:`reta.reporting.ddranking`), sets × student architectures (:mod:`reta.reporting.cross_arch`), corruption
robustness (:mod:`reta.reporting.robustness`) and class-incremental steps with the Fig. 6 plot
(:mod:`reta.reporting.continual`), each only where the runs hold what it needs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from reta.reporting import continual, cross_arch, ddranking, robustness
from reta.reporting.tables import Cell


def extra_sections(cells: list[Cell], paths: list[Path], dd: Mapping, out: Path) -> str:
    """Markdown of the extra sections ('' parts are skipped); writes ``<out>_continual.png`` for continual runs."""
    parts = [ddranking.to_markdown(ddranking.compute(cells, str(dd["hard_protocol"]), float(dd["lrs_lambda"]),
                                                     float(dd["ars_lambda"]), dict(dd.get("no_aug_protocols") or {}))),
             cross_arch.to_markdown(cells), robustness.to_markdown(paths)]
    steps = continual.collect_steps(paths)
    if steps:
        parts.append(continual.to_markdown(steps))
        print(f"plot: {continual.plot(steps, out.with_name(out.name + '_continual.png'))}")
    return "".join("\n" + p for p in parts if p)

"""Cross-architecture tables (``eval_pool=cross_arch``, RETA Table 2's layout): for every (dataset, IPC, protocol,
split) measured with two or more students, one row per set and one column per student architecture, mean ± population
std over seeds of the last-epoch accuracy in percent, and the mean over the architectures each row has. Built from the
cells of :func:`reta.reporting.tables.collect`, so seeds are merged across runs the same way."""

from __future__ import annotations

import statistics

from reta.reporting.tables import Cell
from reta.utils.markdown import md_table


def to_markdown(cells: list[Cell]) -> str:
    """The cross-architecture tables ('' where no (dataset, IPC, protocol, split) has two or more students)."""
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.dataset, c.ipc, c.protocol, c.split), []).append(c)
    out = []
    for (dataset, ipc, protocol, split), group in sorted(groups.items()):
        students = sorted({c.student for c in group})
        if len(students) < 2:
            continue
        by = {(c.method, c.student): c for c in group}
        methods = sorted({c.method for c in group}, key=lambda m: (m != "random", m))
        body = []
        for m in methods:
            row, means = [], []
            for s in students:
                c = by.get((m, s))
                if c is None:
                    row.append(None)
                    continue
                mean, std = c.mean_std()
                means.append(mean)
                row.append(f"{mean:.2f} ± {std:.2f} (n={len(c.acc_last)})")
            complete = len(means) == len(students)
            body.append([m, *row, f"{statistics.fmean(means):.2f}" + ("" if complete else f" ({len(means)} of "
                                                                       f"{len(students)})")])
        where = "" if split == "test" else f", accuracy on {split}"
        out.append(f"### {dataset} IPC {ipc} — cross-architecture, protocol {protocol}{where}\n")
        out.append(md_table(["method", *students, "mean over students"], body))
        out.append("")
    return "\n".join(out)

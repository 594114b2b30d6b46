"""Corruption-robustness tables from the ``robustness`` blocks of ``metrics.json`` (``reta-evaluate
robustness.enabled=true``, :mod:`reta.evaluation.robustness`): per (dataset, IPC, protocol) one row per set with the
clean accuracy, the mean corruption accuracy (mCA, mean over corruptions × severities) and the mean per corruption,
in percent, mean ± population std over seeds (RETA Table 4's layout). Seeds of a row are merged across runs as in
:func:`reta.reporting.tables.collect`."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path

from reta.reporting.tables import row_name
from reta.utils.markdown import md_table


def _ms(vals: list[float]) -> str:
    return f"{100 * statistics.fmean(vals):.2f} ± {100 * (statistics.pstdev(vals) if len(vals) > 1 else 0.0):.2f}"


def to_markdown(paths: Iterable[Path]) -> str:
    """The robustness tables of the runs in ``paths`` ('' when none was scored on corrupted test sets)."""
    rows: dict[tuple, dict[int, tuple[float, dict[str, float]]]] = {}
    names: dict[tuple, list[str]] = {}
    for path in paths:
        m = json.loads(Path(path).read_text())
        for set_name, s in m["sets"].items():
            rob = s.get("robustness")
            if not rob:
                continue
            method = row_name(set_name, m.get("label") or m.get("method") or "distilled")
            table = (m["dataset"], int(m["ipc"]), m["protocol"], m["student"], m.get("eval_split", "test"))
            names.setdefault(table, list(rob["per_corruption"]))
            seeds = m.get("seeds") or list(range(len(s["acc_last"])))
            for i, (seed, clean) in enumerate(zip(seeds, s["acc_last"])):
                per = {n: statistics.fmean(pc["per_seed"][i]) for n, pc in rob["per_corruption"].items()}
                rows.setdefault((*table, method), {})[int(seed)] = (float(clean), per)
    out = []
    for table, cols in names.items():
        dataset, ipc, protocol, student, split = table
        out.append(f"### {dataset} IPC {ipc} — corruption robustness, protocol {protocol}, student {student}"
                   f"{'' if split == 'test' else f', accuracy on {split}'}\n")
        body = []
        for key in sorted((k for k in rows if k[:5] == table), key=lambda k: (k[5] != "random", k[5])):
            per_seed = rows[key]
            mca = [statistics.fmean(per.values()) for _, per in per_seed.values()]
            body.append([key[5], _ms([c for c, _ in per_seed.values()]), _ms(mca),
                         *(_ms([per[n] for _, per in per_seed.values()]) for n in cols), str(len(per_seed))])
        out.append(md_table(["method", "clean", "mCA", *cols, "n"], body))
        out.append("\nmCA: mean accuracy over the corruptions × severities listed in the runs' `robustness` config "
                   "(docs/evaluation.md); a corruption's column is its mean over severities.\n")
    return "\n".join(out)

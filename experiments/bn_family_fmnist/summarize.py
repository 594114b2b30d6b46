"""The grid of run_grid.sh as a Markdown table: last-epoch KD test accuracy (%), mean ± population std over seeds."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

METHODS = ("random", "sre2l", "fadrm", "fadrm_plus")


def cell(out: Path, method: str, ipc: int) -> tuple[list[float], list[float]]:
    if method == "random":
        m = out / f"random_ipc{ipc}" / "metrics.json"
        return (json.loads(m.read_text())["sets"]["random"]["acc_last"] if m.is_file() else []), []
    accs, secs = [], []
    for s in range(3):
        run = out / f"{method}_ipc{ipc}_s{s}"
        if (run / "eval" / "metrics.json").is_file():
            accs += json.loads((run / "eval" / "metrics.json").read_text())["sets"]["distilled"]["acc_last"]
            secs.append(json.loads((run / "distilled" / "meta.json").read_text())["synthesis_seconds"])
    return accs, secs


def main(out: Path) -> str:
    lines = ["| IPC | random | SRe2L | FADRM | FADRM+ |", "|---|---|---|---|---|"]
    for ipc in (1, 10, 50):
        row = []
        for method in METHODS:
            accs, _ = cell(out, method, ipc)
            sd = statistics.pstdev(accs) if len(accs) > 1 else 0.0
            row.append(f"{100 * statistics.fmean(accs):.2f} ± {100 * sd:.2f}" + ("" if len(accs) == 3 else f" (n={len(accs)})")
                       if accs else "–")
        lines.append(f"| {ipc} | " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/bn_family_fmnist")))

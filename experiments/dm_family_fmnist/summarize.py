"""Collect the DM-family Fashion-MNIST grid (outputs/dm_family/) into one Markdown table.

Rows: (IPC, set); accuracy = last-epoch test accuracy of the hard-label protocol, mean ± population std over seeds;
synthesis wall time from the distilled set's meta.json; student wall time = mean seconds per student.

    .venv/bin/python experiments/dm_family_fmnist/summarize.py [outputs/dm_family]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/dm_family")
    rows = []
    for mpath in sorted(root.glob("eval_*/metrics.json")):
        m = json.loads(mpath.read_text())
        for name, s in m["sets"].items():
            synth, label, iters, exp = None, "random real subset", None, m.get("expansion", "none")
            if name == "distilled":
                meta = json.loads((Path(m["distilled"]) / "meta.json").read_text())
                synth, iters = meta.get("synthesis_seconds"), meta.get("iterations")
                label = meta["method"]
            acc = [100 * a for a in s["acc_last"]]
            rows.append((m["ipc"], 0 if name == "random" else 1, label, iters, exp if name == "distilled" else "none",
                         statistics.fmean(acc), statistics.pstdev(acc) if len(acc) > 1 else 0.0, acc, synth,
                         statistics.fmean(s["seconds"]), m["student_config"]["kwargs"], m["protocol_config"]["epochs"]))
    rows.sort(key=lambda r: (r[0], r[1], r[2], r[3] or 0))
    print("| IPC | set | synthesis iterations | acc. % (mean ± std) | per seed | synthesis s | s / student |")
    print("|---|---|---|---|---|---|---|")
    for ipc, _, label, iters, exp, mean, std, acc, synth, stud, _, _ in rows:
        lab = label + (" (stored ×4 expanded)" if exp == "quadrants" else "")
        print(f"| {ipc} | {lab} | {iters or '–'} | {mean:.2f} ± {std:.2f} | {', '.join(f'{a:.2f}' for a in acc)} | "
              f"{'–' if synth is None else f'{synth:.0f}'} | {stud:.0f} |")
    if rows:
        print(f"\nstudent {rows[0][10]}, {rows[0][11]} epochs, protocol hard; seeds {len(rows[0][7])}")


if __name__ == "__main__":
    main()

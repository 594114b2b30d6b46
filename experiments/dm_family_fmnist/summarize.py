"""Collect the DM-family Fashion-MNIST grid (outputs/dm_family/) into one Markdown table.

Rows: (IPC, set); accuracy = last-epoch test accuracy of the hard-label protocol, mean ± population std over seeds;
synthesis wall time from the distilled set's meta.json; student wall time = mean seconds per student.
Only hard-protocol files are read; random subsets are merged by seed over every file given (the committed random
baseline runs of experiments/random_baseline/runs/ carry them; the DM-family evaluations use baseline=false).

    .venv/bin/python experiments/dm_family_fmnist/summarize.py outputs/dm_family experiments/random_baseline/runs
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from reta.utils.markdown import md_table


def main() -> None:
    roots = [Path(a) for a in sys.argv[1:]] or [Path("outputs/dm_family"), Path("experiments/random_baseline/runs")]
    rows, random = [], {}  # random subsets: {ipc: {seed: (acc, seconds)}}, merged over files
    for mpath in sorted(p for root in roots for p in root.glob("*/metrics.json")):
        m = json.loads(mpath.read_text())
        if m["protocol"] != "hard":
            continue
        for name, s in m["sets"].items():
            if name == "random":
                for seed, acc, sec in zip(m["seeds"], s["acc_last"], s["seconds"]):
                    random.setdefault(m["ipc"], {})[seed] = (100 * acc, sec)
                continue
            meta_path = Path(m["distilled"]) / "meta.json"  # outputs/… runs; the committed copies carry the fields
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            iters = m.get("synthesis_iterations", meta.get("iterations"))
            synth = m.get("synthesis_seconds", meta.get("synthesis_seconds"))
            acc = [100 * a for a in s["acc_last"]]
            rows.append((m["ipc"], 1, m["method"], iters, m.get("expansion", "none"), acc,
                         synth, statistics.fmean(s["seconds"]), m["student_config"]["kwargs"],
                         m["protocol_config"]["epochs"]))
    for ipc, by_seed in random.items():
        accs = [by_seed[k][0] for k in sorted(by_seed)]
        rows.append((ipc, 0, "random real subset", None, "none", accs, None,
                     statistics.fmean(by_seed[k][1] for k in by_seed), None, None))
    rows.sort(key=lambda r: (r[0], r[1], r[2], r[3] or 0))
    table = []
    for ipc, _, label, iters, exp, acc, synth, stud, _, _ in rows:
        lab = label + (" (stored ×4 expanded)" if exp == "quadrants" else
                       " (no expansion)" if label.startswith("idm") else "")
        std = statistics.pstdev(acc) if len(acc) > 1 else 0.0
        table.append([ipc, lab, iters or "–", f"{statistics.fmean(acc):.2f} ± {std:.2f}",
                      ", ".join(f"{a:.2f}" for a in acc), "–" if synth is None else f"{synth:.0f}", f"{stud:.0f}"])
    print(md_table(["IPC", "set", "synthesis iterations", "acc. % (mean ± std)", "per seed", "synthesis s",
                    "s / student"], table))
    student = next((r for r in rows if r[8] is not None), None)
    if student:
        print(f"\nstudent {student[8]}, {student[9]} epochs, protocol hard; last-epoch accuracy, population std")


if __name__ == "__main__":
    main()

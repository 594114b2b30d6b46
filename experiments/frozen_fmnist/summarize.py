"""Print the frozen-backbone results table from ``runs/*/metrics.json`` (protocol linear_probe).

    python experiments/frozen_fmnist/summarize.py
"""

from __future__ import annotations

import json
from pathlib import Path

RUNS = Path(__file__).resolve().parent / "runs"


def fmt(s: dict) -> str:
    return f"{100 * s['acc_mean']:.2f} ± {100 * s['acc_std']:.2f}"


def main() -> None:
    print("| run | backbone | set made for | IPC | eval split | set | probe accuracy (%) | per seed (%) |")
    print("|---|---|---|---|---|---|---|---|")
    for path in sorted(RUNS.glob("*/metrics.json")):
        m = json.loads(path.read_text())
        b = m.get("backbone", {})
        for name, s in m["sets"].items():
            label = m["method"] if name == "distilled" else name
            if name == "distilled_inherited":
                label = f"{m['method']} images, inherited W*·P"
            elif name == "random_inherited":
                label = "random real images, inherited W*·P"
            per_seed = ", ".join(f"{100 * a:.2f}" for a in s["acc_last"])
            print(f"| {path.parent.name} | {b.get('name')} | {b.get('made_for') or '–'} | {m['ipc']} | "
                  f"{m.get('eval_split', 'test')} | {label} | {fmt(s)} | {per_seed} |")


if __name__ == "__main__":
    main()

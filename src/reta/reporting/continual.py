"""Class-incremental results (``protocol=continual``, :mod:`reta.evaluation.continual`) from the ``steps`` lists of
``metrics.json``: a table of accuracy on the seen classes per step, and RETA Fig. 6's two plots — accuracy vs classes
seen (one panel per memory budget) and the mean over steps vs memory budget — one line per set, mean ± population
std over seeds. Seeds of a (method, budget) row are merged across runs as in :func:`reta.reporting.tables.collect`."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path

from reta.reporting.tables import row_name
from reta.utils.markdown import md_table


def collect_steps(paths: Iterable[Path]) -> dict[tuple, dict[int, list[float]]]:
    """``{(dataset, student, split, method, budget): {seed: [accuracy per step]}}`` of every continual run."""
    rows: dict[tuple, dict[int, list[float]]] = {}
    for path in paths:
        m = json.loads(Path(path).read_text())
        for set_name, s in m["sets"].items():
            if "steps" not in s:
                continue
            method = row_name(set_name, m.get("label") or m.get("method") or "distilled")
            if m["protocol"] != "continual":  # continual_kd: KD students per step, rows of their own
                method = f"{method} [{m['protocol']}]"
            key = (m["dataset"], m["student"], m.get("eval_split", "test"), method, int(m["ipc"]))
            for i, seed in enumerate(m.get("seeds") or range(len(s["acc_last"]))):
                rows.setdefault(key, {})[int(seed)] = [r["acc_last"][i] for r in s["steps"]]
    return rows


def _ms(vals: list[float]) -> tuple[float, float]:
    return 100 * statistics.fmean(vals), 100 * (statistics.pstdev(vals) if len(vals) > 1 else 0.0)


def _order(key: tuple) -> tuple:
    return (key[:3], key[4], not key[3].startswith("random"), key[3])


def to_markdown(rows: dict[tuple, dict[int, list[float]]]) -> str:
    """One table per (dataset, student, split): rows (method, memory per class), columns the steps."""
    out, groups = [], {}
    for key in sorted(rows, key=_order):
        groups.setdefault(key[:3], []).append(key)
    for (dataset, student, split), keys in groups.items():
        n_steps = max(len(a) for k in keys for a in rows[k].values())
        out.append(f"### {dataset} — class-incremental (protocol continual), student {student}"
                   f"{'' if split == 'test' else f', accuracy on {split}'}\n")
        body = []
        for k in keys:
            per_seed = list(rows[k].values())
            cells = [("{:.2f} ± {:.2f}".format(*_ms([a[i] for a in per_seed])) if all(len(a) > i for a in per_seed)
                      else "–") for i in range(n_steps)]
            body.append([k[3], str(k[4]), *cells, "{:.2f} ± {:.2f}".format(*_ms([statistics.fmean(a)
                                                                                for a in per_seed])),
                         str(len(per_seed))])
        out.append(md_table(["method", "memory / class", *(f"step {i + 1}" for i in range(n_steps)),
                             "mean over steps", "n"], body))
        out.append("\nAccuracy (%) on the test images of the classes seen so far; every step trains a student on the "
                   "memory of those classes (docs/evaluation.md).\n")
    return "\n".join(out)


def plot(rows: dict[tuple, dict[int, list[float]]], out_png: Path, title: str = "") -> Path:
    """Fig. 6: accuracy vs step, one panel per budget, plus the mean over steps vs budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({k[4] for k in rows})
    methods = sorted({k[3] for k in rows}, key=lambda m: (not m.startswith("random"), m))
    fig, axes = plt.subplots(1, len(budgets) + 1, figsize=(4 * (len(budgets) + 1), 3.4), squeeze=False)
    for ax, b in zip(axes[0], budgets):
        for method in methods:
            for key in (k for k in sorted(rows) if k[3] == method and k[4] == b):
                per_seed = list(rows[key].values())
                n = min(len(a) for a in per_seed)
                ms = [_ms([a[i] for a in per_seed]) for i in range(n)]
                ax.errorbar(range(1, n + 1), [m for m, _ in ms], yerr=[s for _, s in ms], capsize=3, marker="o",
                            label=method, linestyle="--" if method.startswith("random") else "-")
        ax.set(title=f"memory {b} / class", xlabel="step", ylabel="accuracy on seen classes (%)")
        ax.grid(alpha=0.3)
    ax = axes[0][-1]
    for method in methods:
        pts = [(k[4], _ms([statistics.fmean(a) for a in rows[k].values()])) for k in sorted(rows) if k[3] == method]
        ax.errorbar([b for b, _ in pts], [m for _, (m, _) in pts], yerr=[s for _, (_, s) in pts], capsize=3,
                    marker="o", label=method, linestyle="--" if method.startswith("random") else "-")
    ax.set(title="mean over steps", xlabel="memory images per class", ylabel="accuracy (%)")
    ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.stem}.tmp.png")  # atomic: write aside, then rename
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png

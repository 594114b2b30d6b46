"""Sweep plots: test accuracy of the distilled set against one method hyperparameter, with error bars.

Each run dir of a sweep holds ``metrics.json`` (per-seed accuracies) and the distilled set whose ``meta.json`` records
the method config; the x value is read from that config by a dotted key (``residual.anchors.lam``). The random
subset of the same IPC is drawn as a horizontal band (mean ± std), so the plot shows whether the method earns its
place (docs/methods.md §10).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from reta.errors import RetaError


def _lookup(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def sweep_points(metrics_paths: list[Path], key: str) -> tuple[list[tuple[float, list[float]]], list[float]]:
    """``([(x, per-seed distilled accs)], per-seed random accs)`` over the runs, x sorted ascending."""
    points: dict[float, list[float]] = {}
    random: dict[int, float] = {}
    for path in metrics_paths:
        m = json.loads(Path(path).read_text())
        for seed, acc in zip(m.get("seeds", []), m["sets"].get("random", {}).get("acc_last", [])):
            random[int(seed)] = acc  # also from random-only runs (a sweep run with baseline=false)
        if "distilled" not in m["sets"] or not m.get("distilled"):
            continue
        meta_path = Path(m["distilled"]) / "meta.json"
        if not meta_path.is_file():
            raise RetaError(f"{path}: its distilled set {m['distilled']} has no meta.json")
        method_cfg = json.loads(meta_path.read_text()).get("method_config", {})
        try:
            x = float(_lookup(method_cfg, key))
        except (KeyError, TypeError, ValueError) as err:
            raise RetaError(f"{meta_path}: method config has no numeric {key!r}") from err
        points.setdefault(x, []).extend(m["sets"]["distilled"]["acc_last"])
    if not points:
        raise RetaError(f"no run with a distilled set found for the sweep over {key!r}")
    return sorted(points.items()), [random[s] for s in sorted(random)]


def plot_sweep(metrics_paths: list[Path], key: str, out_png: Path, title: str = "") -> Path:
    """Write an error-bar plot (percent, mean ± std over seeds) of the sweep over ``key`` to ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts, rand = sweep_points(metrics_paths, key)
    xs = [x for x, _ in pts]
    means = [100 * statistics.fmean(v) for _, v in pts]
    stds = [100 * (statistics.pstdev(v) if len(v) > 1 else 0.0) for _, v in pts]
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=150)
    ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label="distilled")
    if rand:
        rm = 100 * statistics.fmean(rand)
        rs = 100 * (statistics.pstdev(rand) if len(rand) > 1 else 0.0)
        ax.axhline(rm, color="gray", ls="--", lw=1, label="random subset")
        ax.axhspan(rm - rs, rm + rs, color="gray", alpha=0.15)
    ax.set_xlabel(key)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or f"sweep over {key}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png

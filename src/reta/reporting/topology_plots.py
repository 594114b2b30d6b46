"""Topology diagnostics as figures: Betti curves and persistence images, real vs synthetic, per class.

Run it with ``reta-report topology.run_dir=RUN_DIR`` (``RUN_DIR`` is a ``reta-distill`` output dir or the
``distilled/`` dir inside one; ``topology.classes=[0,3]``, ``topology.max_classes``, ``topology.seed``,
``topology.out_dir``, ``topology.overrides=[paths.cache_dir=…]`` adjust it). The clouds come from
:func:`reta.synthesis.reta.diagnostics.class_clouds`; this module only computes diagrams and draws.

Per class: **real** = M size-matched random subsets (IPC points each) of the class's real pool, pooled with weight
1/M, so the real curves and images are the *expected* ones of IPC real points; **Betti curves** β_q(ε) = # bars alive
at scale ε (β_0 counts the global component too) on the mutual k-NN flag filtration; **persistence images** PI⁰/PI¹ at
the class cutoff κ (PTA's ``cutoff`` policy), with the run's PTA settings (docs/methods.md §4.2).

Outputs under ``RUN_DIR/diagnostics/topology/``: ``class_<c>_<name>.png`` (β_0, β_1 and the four persistence images),
``betti_summary.png`` (all plotted classes), ``topology.json`` (per class: κ, bar counts, ‖ΔPI⁰‖², ‖ΔPI¹‖², i.e. the
PTA loss of the final set against one draw of real targets).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reta.topology.diagrams import pairing_bars, persistence_pairings, resolve_cutoff
from reta.topology.graph import mutual_knn_graphs
from reta.topology.images import persistence_images
from reta.topology.loss import TopologyConfig, build_real_targets
from reta.utils.io import atomic_write_text


def betti_curve(bars: tuple[torch.Tensor, torch.Tensor, torch.Tensor], eps: np.ndarray) -> np.ndarray:
    """β(ε) = Σ multiplicity · [b ≤ ε < d] over ``bars`` = (births, deaths, multiplicity)."""
    b, d, m = (t.detach().cpu().double().numpy() for t in bars)
    if len(b) == 0:
        return np.zeros_like(eps)
    alive = (b[None, :] <= eps[:, None]) & (eps[:, None] < d[None, :])
    return (alive * m[None, :]).sum(1)


def _pi(bars: tuple[torch.Tensor, torch.Tensor, torch.Tensor], kappa: float, config: TopologyConfig) -> torch.Tensor:
    b, d, m = (t.double()[None] for t in bars)
    return persistence_images(b, d, torch.tensor([kappa], dtype=torch.float64), m, config.grid, config.sigma,
                              config.power, config.kernel)[0]


def class_topology(
    real_pool: torch.Tensor, syn: torch.Tensor, config: TopologyConfig, generator: torch.Generator
) -> dict:
    """Bars, cutoff and persistence images of one class: synthetic cloud ``syn [n, d]`` vs size-matched real subsets."""
    n = int(syn.shape[0])
    target = build_real_targets([real_pool], n, config, generator)[0]
    graph = mutual_knn_graphs([syn], config.k, config.squared)
    h0, h1 = pairing_bars(persistence_pairings(graph, with_h1=n >= 4), np.zeros(1, dtype=np.int64), 1)
    syn_longest = torch.as_tensor(graph.longest_edge(), dtype=torch.float64)
    kappa = float(
        resolve_cutoff(config.cutoff, torch.tensor([target.longest_edge], dtype=torch.float64), syn_longest)[0]
    )
    out = {"n": n, "kappa": kappa, "real": {"h0": target.h0, "h1": target.h1},
           "syn": {"h0": h0.group(0), "h1": h1.group(0)}}
    for side in ("real", "syn"):
        out[side]["pi0"] = _pi(out[side]["h0"], kappa, config)
        out[side]["pi1"] = _pi(out[side]["h1"], kappa, config)
    out["d0"] = float(((out["syn"]["pi0"] - out["real"]["pi0"]) ** 2).sum())
    out["d1"] = float(((out["syn"]["pi1"] - out["real"]["pi1"]) ** 2).sum()) if n >= 4 else 0.0
    return out


def _plot_class(path: Path, title: str, topo: dict, eps: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 7), constrained_layout=True)
    for q, row in ((0, axes[0]), (1, axes[1])):
        ax = row[0]
        for side, style in (("real", dict(color="tab:blue", label="real (size-matched mean)")),
                            ("syn", dict(color="tab:red", label="synthetic"))):
            curve = betti_curve(topo[side][f"h{q}"], eps) + (1.0 if q == 0 else 0.0)
            ax.step(eps, curve, where="post", **style)
        ax.axvline(topo["kappa"], color="grey", lw=0.8, ls=":")
        ax.set_xlabel("ε (feature distance)")
        ax.set_ylabel(f"β{q}")
        ax.set_title(f"Betti-{q} curve")
        ax.legend(fontsize=7)
        vmax = float(max(topo["real"][f"pi{q}"].max(), topo["syn"][f"pi{q}"].max(), 1e-12))
        for ax, side in ((row[1], "real"), (row[2], "syn")):
            im = ax.imshow(topo[side][f"pi{q}"].T.numpy(), origin="lower", extent=(0, 1, 0, 1), vmin=0, vmax=vmax,
                           cmap="viridis", aspect="equal")
            ax.set_title(f"PI{q} {side}" + (f"  ‖Δ‖²={topo[f'd{q}']:.3g}" if side == "syn" else ""), fontsize=9)
            ax.set_xlabel("birth / κ")
            ax.set_ylabel("persistence / κ")
        fig.colorbar(im, ax=list(row[1:]), shrink=0.8)
    fig.suptitle(f"{title} — n={topo['n']}, κ={topo['kappa']:.3f}")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_summary(path: Path, rows: list[tuple[str, dict]], eps: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 2, figsize=(8, 1.9 * len(rows) + 0.6), squeeze=False)
    for (name, topo), (a0, a1) in zip(rows, axes):
        for q, ax in ((0, a0), (1, a1)):
            for side, color in (("real", "tab:blue"), ("syn", "tab:red")):
                ax.step(eps, betti_curve(topo[side][f"h{q}"], eps) + (1.0 if q == 0 else 0.0), where="post",
                        color=color, label=side)
            ax.set_ylabel(f"{name}\nβ{q}", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    axes[-1, 0].set_xlabel("ε")
    axes[-1, 1].set_xlabel("ε")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_topology_report(out: Path, clouds: list, config: TopologyConfig, seed: int = 0,
                          info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Plots and ``topology.json`` under ``out`` for ``clouds`` = ``[(class, name, real [P, d], syn [n, d]), …]``."""
    gen = torch.Generator().manual_seed(int(seed))
    out.mkdir(parents=True, exist_ok=True)
    rows, summary = [], {}
    for c, name, real, syn in clouds:
        topo = class_topology(real, syn, config, gen)
        rows.append((c, f"{c} {name}", name, topo))
        summary[str(c)] = {
            "name": name, "n_syn": topo["n"], "n_real_pool": int(real.shape[0]), "kappa": topo["kappa"],
            "pi0_sq_dist": topo["d0"], "pi1_sq_dist": topo["d1"], "pta_loss": topo["d0"] + config.gamma * topo["d1"],
            "bars": {side: {h: float(topo[side][h][2].sum()) for h in ("h0", "h1")} for side in ("real", "syn")},
        }
    kmax = max(t["kappa"] for *_, t in rows)
    eps = np.linspace(0.0, 1.05 * kmax, 256)
    files = []
    info = dict(info or {})
    for c, label, name, topo in rows:
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))
        path = out / f"class_{c:03d}_{safe}.png"
        _plot_class(path, f"{info.get('method', '?')} · class {label}", topo, eps)
        files.append(path.name)
    _plot_summary(out / "betti_summary.png", [(label, topo) for _, label, _, topo in rows], eps)
    result = {
        **info, "topology": dataclasses.asdict(config), "classes": summary,
        "mean_pta_loss": float(np.mean([v["pta_loss"] for v in summary.values()])),
        "files": [*files, "betti_summary.png"],
    }
    atomic_write_text(out / "topology.json", json.dumps(result, indent=2))
    return result


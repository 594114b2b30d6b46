"""Topology diagnostics of a finished distillation run: Betti curves and persistence images, real vs synthetic.

Usage::

    python -m reta.reporting.topology_plots RUN_DIR [key=value ...]     # e.g. paths.cache_dir=/work/main/.cache/reta

``RUN_DIR`` is a ``reta-distill`` output dir (it holds ``distilled/`` and Hydra's ``.hydra/config.yaml``) or a
distilled-set dir inside one; ``key=value`` pairs override the saved config (dotted keys) and set the options below
(``diag.<option>=…``). From Python: :func:`topology_diagnostics` with the composed ``cfg``.

What is compared, per class c (METHODS.md §4.2, same graph/diagram/image code as PTA, :mod:`reta.topology`):

* **features**: L2-normalised penultimate features of the reference teacher (the method's first teacher, else the
  run's ``model``), eval mode, from the cached squeeze;
* **synthetic cloud**: the IPC images of class c in the distilled set;
* **real**: M size-matched random subsets (IPC points each) of class c's real pool — the teacher-scored crop list of
  the real-patch initialisation (the DRC/PTA pool; cached under ``paths.cache_dir``) — pooled with weight 1/M, so the
  real curves and images are the *expected* ones of IPC real points;
* **Betti curves** β_q(ε) = # bars alive at scale ε (β_0 counts the global component too) on the mutual k-NN flag
  filtration, and **persistence images** PI⁰/PI¹ at the class cutoff κ (PTA's ``cutoff`` policy), with the PTA
  settings of the run (``method.callbacks.pta``) or the PTA defaults.

Outputs under ``RUN_DIR/diagnostics/topology/``: ``class_<c>_<name>.png`` (β_0, β_1 and the four persistence images),
``betti_summary.png`` (all plotted classes), ``topology.json`` (per class: κ, bar counts, ‖ΔPI⁰‖², ‖ΔPI¹‖², i.e. the
PTA loss of the final set against one draw of real targets). IPC 1 has no edges: nothing to plot (one line says so).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from reta.data.augment import normalize
from reta.data.distilled import load_distilled
from reta.data.registry import load_split
from reta.errors import RetaError
from reta.models import features
from reta.topology.diagrams import pairing_bars, persistence_pairings, resolve_cutoff
from reta.topology.graph import mutual_knn_graphs
from reta.topology.images import persistence_images
from reta.topology.loss import TopologyConfig, build_real_targets
from reta.utils.config import plain

log = logging.getLogger(__name__)
TOPO_KEYS = ("k", "grid", "sigma", "gamma", "power", "cutoff", "kernel", "reduction", "squared", "num_subsets")


def _locate(run_dir: str | Path) -> tuple[Path, Path]:
    """(run dir, distilled dir) from either of them."""
    d = Path(run_dir)
    if (d / "meta.json").is_file():
        return d.parent, d
    if (d / "distilled" / "meta.json").is_file():
        return d, d / "distilled"
    raise RetaError(f"topology_plots: {d} is neither a run dir (with distilled/) nor a distilled-set dir")


def load_run_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The run's saved Hydra config (``.hydra/config.yaml``) with dotted ``key=value`` overrides applied."""
    run, _ = _locate(run_dir)
    path = run / ".hydra" / "config.yaml"
    if not path.is_file():
        raise RetaError(f"topology_plots: no saved config at {path}; pass cfg= from Python")
    cfg = OmegaConf.load(path)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg


def topology_config(cfg: DictConfig) -> TopologyConfig:
    pta = plain(cfg.method).get("callbacks", {}).get("pta", {}) if "method" in cfg else {}
    return TopologyConfig(**{k: pta[k] for k in TOPO_KEYS if k in pta})


def _reference_teacher(cfg: DictConfig, train, test) -> tuple[torch.nn.Module, dict]:
    from reta.distill import TeacherLoader

    method = plain(cfg.method) if "method" in cfg else {}
    model_cfg = None
    if method.get("kind") == "bn_matching" and method.get("teachers"):
        from reta.synthesis.bn.family import teacher_specs

        model_cfg = teacher_specs(cfg, method["teachers"])[0][1]
    model, meta = TeacherLoader(cfg, train, test)(model_cfg)
    return model.eval().requires_grad_(False), meta


@torch.no_grad()
def _embed(model, pixels: torch.Tensor, mean, std, batch: int = 256) -> torch.Tensor:
    out = [F.normalize(features(model, normalize(pixels[s : s + batch], mean, std)).float().flatten(1), dim=1)
           for s in range(0, len(pixels), batch)]
    return torch.cat(out)


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


def class_topology(real_pool: torch.Tensor, syn: torch.Tensor, config: TopologyConfig, generator: torch.Generator) -> dict:
    """Bars, cutoff and persistence images of one class: synthetic cloud ``syn [n, d]`` vs size-matched real subsets."""
    n = int(syn.shape[0])
    target = build_real_targets([real_pool], n, config, generator)[0]
    graph = mutual_knn_graphs([syn], config.k, config.squared)
    h0, h1 = pairing_bars(persistence_pairings(graph, with_h1=n >= 4), np.zeros(1, dtype=np.int64), 1)
    syn_longest = torch.as_tensor(graph.longest_edge(), dtype=torch.float64)
    kappa = float(resolve_cutoff(config.cutoff, torch.tensor([target.longest_edge], dtype=torch.float64), syn_longest)[0])
    out = {"n": n, "kappa": kappa, "real": {"h0": target.h0, "h1": target.h1}, "syn": {"h0": h0.group(0), "h1": h1.group(0)}}
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


def topology_diagnostics(
    run_dir: str | Path,
    cfg: DictConfig | None = None,
    out_dir: str | Path | None = None,
    classes: Sequence[int] | None = None,
    max_classes: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the PNGs and ``topology.json`` for the run in ``run_dir`` (see module docstring); returns the summary."""
    run, dist_dir = _locate(run_dir)
    cfg = load_run_config(run) if cfg is None else cfg
    out = Path(out_dir) if out_dir is not None else run / "diagnostics" / "topology"
    ds = plain(cfg.dataset)
    distilled = load_distilled(dist_dir)
    ipc, num_classes = int(distilled.meta["ipc"]), int(distilled.meta["num_classes"])
    if ipc < 2:
        msg = "IPC 1: a one-point cloud has no edges, no topology to compare"
        print(f"topology_plots: {msg}")
        return {"ipc": ipc, "skipped": msg}
    config = topology_config(cfg)
    train = load_split(cfg.dataset, "train", cfg.paths.data_dir)
    test = load_split(cfg.dataset, "test", cfg.paths.data_dir)
    teacher, tmeta = _reference_teacher(cfg, train, test)
    method = plain(cfg.method) if "method" in cfg else {}
    init = method.get("init", {}) if isinstance(method.get("init"), dict) else {}
    from reta.synthesis.bn.init import cached_patch_pool, teacher_id

    extra = {"crop_scale": tuple(init["crop_scale"])} if "crop_scale" in init else {}  # same cache entry as the run
    pool = cached_patch_pool(cfg.paths.cache_dir, ds["name"], teacher_id(tmeta), dataset=train, teacher=teacher,
                             mean=ds["mean"], std=ds["std"], num_classes=num_classes, size=ds["image_size"],
                             mipc=int(init.get("mipc", 300)), num_crop=int(init.get("num_crop", 5)), seed=int(cfg.seed),
                             **extra)
    chosen = list(range(num_classes))[:max_classes] if classes is None else [int(c) for c in classes]
    names = distilled.meta.get("class_names") or ds.get("class_names") or [str(c) for c in range(num_classes)]
    gen = torch.Generator().manual_seed(int(seed))
    out.mkdir(parents=True, exist_ok=True)
    rows, summary = [], {}
    for c in chosen:
        real = _embed(teacher, pool.render(train, c), ds["mean"], ds["std"])
        syn = _embed(teacher, distilled.images[distilled.labels == c], ds["mean"], ds["std"])
        topo = class_topology(real, syn, config, gen)
        rows.append((f"{c} {names[c]}", topo))
        summary[str(c)] = {
            "name": names[c], "n_syn": topo["n"], "n_real_pool": int(real.shape[0]), "kappa": topo["kappa"],
            "pi0_sq_dist": topo["d0"], "pi1_sq_dist": topo["d1"], "pta_loss": topo["d0"] + config.gamma * topo["d1"],
            "bars": {side: {h: float(topo[side][h][2].sum()) for h in ("h0", "h1")} for side in ("real", "syn")},
        }
    kmax = max(t["kappa"] for _, t in rows)
    eps = np.linspace(0.0, 1.05 * kmax, 256)
    files = []
    for c, (name, topo) in zip(chosen, rows):
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(names[c]))
        path = out / f"class_{c:03d}_{safe}.png"
        _plot_class(path, f"{distilled.meta.get('method', '?')} · class {name}", topo, eps)
        files.append(path.name)
    _plot_summary(out / "betti_summary.png", rows, eps)
    result = {
        "run_dir": str(run), "method": distilled.meta.get("method"), "ipc": ipc, "teacher": tmeta.get("name"),
        "topology": {k: getattr(config, k) for k in TOPO_KEYS}, "classes": summary,
        "mean_pta_loss": float(np.mean([v["pta_loss"] for v in summary.values()])),
        "files": [*files, "betti_summary.png"],
    }
    (out / "topology.json").write_text(json.dumps(result, indent=2))
    print(f"topology diagnostics: {out} ({len(files)} classes, mean PTA loss {result['mean_pta_loss']:.4g})")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.split("What is compared")[0].strip())
        print("options: diag.classes=[0,1] diag.max_classes=20 diag.seed=0 diag.out_dir=DIR")
        return 0 if args else 2
    run_dir, rest = args[0], args[1:]
    diag = {k.split("=", 1)[0][5:]: k.split("=", 1)[1] for k in rest if k.startswith("diag.")}
    overrides = [k for k in rest if not k.startswith("diag.")]
    try:
        cfg = load_run_config(run_dir, overrides)
        opts = OmegaConf.to_container(OmegaConf.from_dotlist([f"{k}={v}" for k, v in diag.items()]))
        topology_diagnostics(run_dir, cfg, out_dir=opts.get("out_dir"), classes=opts.get("classes"),
                             max_classes=int(opts.get("max_classes", 20)), seed=int(opts.get("seed", 0)))
    except RetaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

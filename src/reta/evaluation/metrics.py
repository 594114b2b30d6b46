"""The ``metrics.json`` record shared by every evaluator: per-set summaries over seeds (last-epoch accuracy is the
headline, mean ± population std; docs/architecture.md "Evaluation") and the one-screen text form."""

from __future__ import annotations

import statistics

from omegaconf import DictConfig

from reta.evaluation.sets import EvalInputs


def summarize(runs: list[dict]) -> dict:
    last = [r["acc_last"] for r in runs]
    return {
        "acc_last": last,
        "acc_best": [r["acc_best"] for r in runs],
        "acc_mean": statistics.fmean(last),
        "acc_std": statistics.pstdev(last) if len(last) > 1 else 0.0,
        "seconds": [round(r["seconds"], 2) for r in runs],
        **({"cached": [bool(r["cached"]) for r in runs]} if all("cached" in r for r in runs) else {}),
    }


def synthesis_iterations(meta: dict) -> int | None:
    """The synthesis iterations a set's method ran (``iterations`` in its ``meta.json``: the matchers of the DC/DSA,
    MTT and DM families and the frozen-backbone family record it); None for a method without an iteration budget
    (RDED, the BN family's stage schedule) or a set that does not record it."""
    iterations = meta.get("iterations")
    return iterations if isinstance(iterations, int) and not isinstance(iterations, bool) else None


def default_label(meta: dict) -> str | None:
    """The row name of a budget snapshot (:mod:`reta.synthesis.snapshots`) when ``label=`` is not given:
    ``<method>_it<N>``, so its students never merge with the run's final set in ``reta-report``; None otherwise."""
    if meta.get("snapshot_of") is None:
        return None
    return f"{meta.get('method')}_it{meta.get('iterations')}"


def metrics_record(cfg: DictConfig, inputs: EvalInputs, sets: dict[str, list[dict]], **fields) -> dict:
    """The common keys of ``metrics.json`` (dataset, ipc, seeds, the set, its method and iterations, label, ``sets``
    summarised); ``fields`` are the evaluator's own (protocol, student, teacher, …), placed before ``sets``."""
    d = inputs.distilled
    return {
        "dataset": cfg.dataset.name,
        "ipc": inputs.ipc,
        **fields,
        "seeds": inputs.seeds,
        "distilled": inputs.source if d is not None else None,
        "method": d.meta.get("method") if d is not None else "random",
        "synthesis_iterations": synthesis_iterations(d.meta) if d is not None else None,
        "synthesis_scale": (d.meta.get("method_config") or {}).get("scale") if d is not None else None,
        "label": cfg.get("label") or (default_label(d.meta) if d is not None else None),
        **({} if "expansion" in fields else {"expansion": "none"}),
        "sets": {name: summarize(runs) for name, runs in sets.items()},
    }


def format_metrics(m: dict) -> str:
    lines = [f"{m['dataset']} IPC {m['ipc']}, protocol {m['protocol']}, student {m['student']}, seeds {m['seeds']}, "
             f"accuracy on {m.get('eval_split', 'test')}"]
    for name, s in m["sets"].items():
        lines.append(
            f"  {name:<10} {100 * s['acc_mean']:6.2f} ± {100 * s['acc_std']:.2f} %   "
            f"(last epoch; best {', '.join(f'{100 * a:.2f}' for a in s['acc_best'])})"
            + (f"; mCA {100 * s['robustness']['mca']:.2f} ± {100 * s['robustness']['mca_std']:.2f} %"
               if "robustness" in s else "")
        )
        if "steps" in s:  # class-incremental steps (reta.evaluation.continual)
            lines.append("    steps: " + ", ".join(f"{r['n_classes']} classes {100 * r['acc_mean']:.2f} ± "
                                                 f"{100 * r['acc_std']:.2f}" for r in s["steps"]))
    return "\n".join(lines)

"""The whole pipeline as a plain function: squeeze (cached) → distill → evaluate, then one small results table.

docs/architecture.md "The three stages": ``run(cfg)`` calls :func:`reta.squeeze.run` (the teacher comes from the cache
when it is there), :func:`reta.distill.run` (``<output_dir>/distilled/``) and :func:`reta.evaluate.run` on that set
together with a random real subset of the same IPC under the identical protocol (``<output_dir>/metrics.json``), and
writes ``results.md`` + ``results.json`` next to them.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from reta import distill, evaluate, squeeze
from reta.synthesis.distributed import ShardInfo
from reta.training.common import configure_data, set_threads
from reta.training.teacher_cache import teacher_cfg
from reta.utils.config import output_dir
from reta.utils.io import atomic_write_json
from reta.utils.markdown import md_table


def results_rows(teacher: dict, dist: dict, metrics: dict) -> list[dict]:
    """One row per evaluated set (random baseline, then the method), plus the teacher."""
    label = (dist.get("teacher") or {}).get("label") or teacher["name"]  # e.g. convnet_d3_w32 (the model choice)
    rows = [{"set": f"teacher ({label})", "ipc": None, "acc_mean": teacher.get("test_acc"), "acc_std": None,
             "acc_last": None, "seconds": teacher.get("train_seconds")}]
    names = {"random": "random real subset", "distilled": dist.get("method", "distilled")}
    for key, s in metrics["sets"].items():
        rows.append({"set": names.get(key, key), "ipc": metrics["ipc"], "acc_mean": s["acc_mean"],
                     "acc_std": s["acc_std"], "acc_last": s["acc_last"],
                     "seconds": dist.get("seconds") if key == "distilled" else None})
    return rows


def format_table(rows: list[dict], metrics: dict) -> str:
    head = (f"{metrics['dataset']}, IPC {metrics['ipc']}, protocol {metrics['protocol']}, "
            f"student {metrics['student']}, "
            f"seeds {metrics['seeds']} — test accuracy, last epoch, mean ± std")
    table = []
    for r in rows:
        acc = "–" if r["acc_mean"] is None else f"{100 * r['acc_mean']:.2f}"
        if r["acc_std"] is not None:
            acc += f" ± {100 * r['acc_std']:.2f}"
        per_seed = ", ".join(f"{100 * a:.2f}" for a in r["acc_last"]) if r["acc_last"] else "–"
        secs = "–" if r["seconds"] is None else f"{r['seconds']:.1f}"
        table.append([r["set"], acc, per_seed, secs])
    return head + "\n\n" + md_table(["set", "accuracy (%)", "per seed (%)", "synthesis / training s"], table)


def preflight(cfg: DictConfig, out: Path) -> None:
    """The distill and evaluate stages' checks (:func:`reta.distill.preflight`, :func:`reta.evaluate.preflight`)."""
    distill.preflight(cfg, out)
    evaluate.preflight(cfg, out)


def run(cfg: DictConfig) -> dict:
    """Run the three stages; returns ``{"teacher", "distill", "metrics", "rows", "results"}``. With
    ``distributed.enabled=true`` under torchrun/srun the distill step is sharded (:mod:`reta.synthesis.distributed`):
    rank 0 trains/caches the teacher first and alone evaluates; the other ranks return ``{"distill": …}``."""
    return distill.sharded_run(cfg, preflight, _run)  # checks before the teacher is trained and before any rank writes


def _run(cfg: DictConfig, shard: ShardInfo) -> dict:
    set_threads(cfg.get("num_threads"))
    configure_data(cfg)
    out = output_dir(cfg)
    tcfg = teacher_cfg(cfg)
    # declared capabilities: the method synthesises with the teacher (or reports it), the protocol labels with it
    uses_teacher = bool(cfg.method.requires_teacher) or bool(cfg.protocol.requires_teacher)
    teacher = None  # without one (LGM/SFM: a frozen backbone), the evaluator's reference is the results' first row
    if uses_teacher:
        with shard.main_first("training the teacher"):
            teacher = squeeze.run(tcfg)
    dist = distill.run(cfg)
    if dist["distilled"] is None:  # a non-zero rank of a sharded distill
        return {"distill": dist}
    # evaluate's `seed` is the teacher's (students use `seeds`)
    metrics = evaluate.run(OmegaConf.merge(cfg, {"distilled": dist["distilled"], "ipc": dist["ipc"],
                                                 "seed": int(tcfg.seed)}))
    if teacher is None:
        ref = metrics["teacher"]
        teacher = {"name": ref.get("label") or ref.get("name"), "test_acc": ref.get("test_acc")}
    rows = results_rows(teacher, dist, metrics)
    table = format_table(rows, metrics)
    (out / "results.md").write_text(table + "\n")
    summary = {"teacher": {k: teacher.get(k) for k in ("name", "test_acc", "checkpoint_sha256", "key")},
               "distill": dist, "metrics": metrics, "rows": rows}
    atomic_write_json(out / "results.json", summary)
    grid = Path(dist["distilled"]) / "grid.png"
    print("\n" + table + "\n")
    print(f"grid image: {grid}")
    print(f"metrics:    {out / 'metrics.json'}")
    print(f"results:    {out / 'results.md'}")
    return {**summary, "results": str(out / "results.md")}

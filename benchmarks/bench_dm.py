"""Seconds per iteration and peak memory of DM, DM+IID, IDM, IDM+IID synthesis (reta.synthesis.dm.family).

Each method runs in its own subprocess (so peak memory is per method): the method config is composed exactly as
``reta-distill method=M dataset=D ipc=N`` would compose it, a DistributionMatcher is built on the real train split,
and ``--iters`` iterations are timed after ``--warmup`` ones (median reported). The IID pool networks have the
configured architecture but random weights (the cost does not depend on them; no pool is trained here).
Peak memory: CPU = peak RSS of the process minus its RSS before the matcher was built (data loading excluded);
CUDA = ``torch.cuda.max_memory_allocated``.

    nice .venv/bin/python benchmarks/bench_dm.py [--ipc 10] [--dataset fashion_mnist] [--iters 5] [--warmup 1]
        [--methods dm dm_iid idm idm_iid] [--threads 1] [--override method.batch_real=256 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from reta.utils.markdown import md_table

CONF_DIR = str(Path(__file__).resolve().parent.parent / "src" / "reta" / "conf")


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one(method: str, dataset: str, ipc: int, iters: int, warmup: int, threads: int, overrides: list[str]) -> dict:
    import torch
    from hydra import compose, initialize_config_dir

    from reta.data.registry import load_split
    from reta.models import build_model
    from reta.synthesis.dm.config import DistributionSpec
    from reta.synthesis.dm.matcher import DistributionMatcher
    from reta.synthesis.matcher_run import matcher_device as _device
    from reta.utils.config import plain

    torch.set_num_threads(threads)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("distill", [f"method={method}", f"dataset={dataset}", f"ipc={ipc}",
                                  "paths.output_dir=/tmp/bench_dm", *overrides])
    spec = DistributionSpec.from_cfg(cfg.method, ipc)
    ds = plain(cfg.dataset)
    train = load_split(cfg.dataset, "train", cfg.paths.data_dir)
    device = _device(cfg)
    torch.manual_seed(0)
    pool = []
    if spec.iid.kappa > 0:
        pool = [build_model(spec.iid.pool.model_cfg, ds["num_classes"], ds["channels"], ds["image_size"]).eval()
                .requires_grad_(False) for _ in range(min(spec.iid.pool.size, 2))]
    base = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    matcher = DistributionMatcher(spec, ds, ipc, train, 0, device, pool)
    for _ in range(warmup):
        matcher.step()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        matcher.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB on Linux
    return {
        "method": method,
        "s_per_it": statistics.median(times),
        "s_min": min(times),
        "peak_mb": (torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else peak_rss - base,
        "device": str(device),
        "embedder": spec.embedder,
        "batch_real": spec.batch_real,
        "expansion": spec.expansion,
        "cm": matcher.use_cm,
        "cc": matcher.use_cc,
        "pool_model": spec.iid.pool.model_cfg if spec.iid.kappa > 0 else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["dm", "dm_iid", "idm", "idm_iid"])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides, e.g. method.batch_real=256")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.dataset, a.ipc, a.iters, a.warmup, a.threads, a.override)))
        return
    rows = []
    for m in a.methods:
        cmd = [sys.executable, __file__, "--one", m, "--dataset", a.dataset, "--ipc", str(a.ipc),
               "--iters", str(a.iters), "--warmup", str(a.warmup), "--threads", str(a.threads),
               "--override", *a.override]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})
        if out.returncode:
            sys.exit(f"{m} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    import torch

    print(f"DM family synthesis on {a.dataset}, IPC {a.ipc}, {rows[0]['device']}, {a.threads} thread(s), "
          f"torch {torch.__version__}; median of {a.iters} iterations after {a.warmup} warm-up")
    if a.override:
        print(f"overrides: {' '.join(a.override)}")
    print()
    table = []
    for r in rows:
        e = r["embedder"]
        emb = f"{e['name']} {e.get('kwargs', {})}"
        pool = f"yes ({r['pool_model']['name']} {r['pool_model'].get('kwargs', {})})" if r["cc"] else "no"
        table.append([r["method"], f"{r['s_per_it']:.3f}", f"{r['s_min']:.3f}", f"{r['peak_mb']:.0f}", emb,
                      r["batch_real"], r["expansion"], "yes" if r["cm"] else "no", pool])
    print(md_table(["method", "s / iteration", "min", "peak memory (MiB)", "embedder", "batch_real", "expansion",
                    "L_CM", "L_CC (pool model)"], table))


if __name__ == "__main__":
    main()

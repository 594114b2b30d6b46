"""Seconds per step and peak memory of LGM vs SFM synthesis (reta.synthesis.frozen) at several IPCs.

Each (method, IPC) runs in its own subprocess (peak memory per cell). The method config is composed exactly as
``reta-distill method=M ipc=N`` would compose it; the backbone is the configured architecture at random init
(``backbone=random``: the cost does not depend on the weights, so no SimCLR training is needed here), the SFM target
flows are random (their cost is a one-off pass, reported by the distill run as ``real_statistics.seconds``), and the
pyramid has all its levels (the most expensive decode). ``--iters`` steps (decode → loss → backward → Adam) are
timed after ``--warmup`` ones (median reported). Peak memory: CPU = peak RSS of the process minus its RSS before the
module was built; CUDA = ``torch.cuda.max_memory_allocated``.

    nice .venv/bin/python benchmarks/bench_frozen.py [--ipc 1 10] [--methods lgm sfm] [--iters 10] [--warmup 2]
        [--threads 1] [--device cpu|cuda] [--override method.augs_per_batch=3 ...]
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

CONF_DIR = str(Path(__file__).resolve().parent.parent / "src" / "reta" / "conf")


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one(method: str, ipc: int, iters: int, warmup: int, threads: int, device: str, overrides: list[str]) -> dict:
    import torch
    from hydra import compose, initialize_config_dir

    from reta.data.registry import load_split
    from reta.synthesis.frozen.family import build_images, spec_for
    from reta.synthesis.frozen.module import FrozenSynthesisModule
    from reta.training.backbone import get_backbone
    from reta.utils.config import plain

    torch.set_num_threads(threads)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("distill", [f"method={method}", f"ipc={ipc}", "backbone=random",
                                  "paths.output_dir=/tmp/bench_frozen", "paths.cache_dir=/tmp/bench_frozen/cache",
                                  *overrides])
    spec = spec_for(cfg.method, ipc)
    ds = plain(cfg.dataset)
    C = int(ds["num_classes"])
    train = load_split(cfg.dataset, "train", cfg.paths.data_dir)
    backbone = get_backbone(cfg, train).to(device)
    g = torch.Generator().manual_seed(0)
    base = _rss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    images = build_images(spec, ds, ipc, train, 0)
    while images.extend(g):
        pass
    images = images.to(device)
    target = torch.randn(C, backbone.dim, generator=g)
    module = FrozenSynthesisModule(spec, images, backbone, torch.arange(C).repeat_interleave(ipc), C, 0,
                                   target_flows=target, train=train if spec.loss == "lgm" else None).to(device)
    opt = torch.optim.Adam(images.parameters(), lr=spec.lr)

    def step():
        x = images.decode()
        loss = module.sfm_step_loss(x) if spec.loss == "sfm" else module.lgm_step_loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB on Linux
    return {"method": method, "ipc": ipc, "s_per_step": statistics.median(times), "s_min": min(times),
            "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else peak_rss - base,
            "device": device, "backbone": plain(cfg.backbone.model), "augs_per_batch": spec.augs_per_batch,
            "param": spec.param}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["lgm", "sfm"])
    p.add_argument("--ipc", nargs="+", type=int, default=[1, 10])
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides, e.g. method.augs_per_batch=3")
    p.add_argument("--one", nargs=2, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], int(a.one[1]), a.iters, a.warmup, a.threads, a.device, a.override)))
        return
    rows = []
    for ipc in a.ipc:
        for m in a.methods:
            cmd = [sys.executable, __file__, "--one", m, str(ipc), "--iters", str(a.iters), "--warmup", str(a.warmup),
                   "--threads", str(a.threads), "--device", a.device, "--override", *a.override]
            out = subprocess.run(cmd, capture_output=True, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})
            if out.returncode:
                sys.exit(f"{m} IPC {ipc} failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    import torch

    r0 = rows[0]
    print(f"Frozen-backbone synthesis on fashion_mnist, {r0['device']}, {a.threads} thread(s), "
          f"torch {torch.__version__}; "
          f"backbone {r0['backbone']['name']} {r0['backbone'].get('kwargs', {})} (random init), full pyramid; "
          f"median of {a.iters} steps after {a.warmup} warm-up")
    if a.override:
        print(f"overrides: {' '.join(a.override)}")
    print()
    print("| IPC | method | s / step | min | peak memory (MiB) | LGM augs_per_batch "
          "| SFM time / LGM time | SFM mem / LGM mem |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        lgm = next((q for q in rows if q["ipc"] == r["ipc"] and q["method"] == "lgm"), None)
        ratio_t = f"{r['s_per_step'] / lgm['s_per_step']:.3f}" if lgm and r["method"] == "sfm" else "–"
        ratio_m = f"{r['peak_mb'] / lgm['peak_mb']:.3f}" if lgm and r["method"] == "sfm" and lgm["peak_mb"] > 0 else "–"
        print(f"| {r['ipc']} | {r['method']} | {r['s_per_step']:.4f} | {r['s_min']:.4f} | {r['peak_mb']:.0f} | "
              f"{r['augs_per_batch'] if r['method'] == 'lgm' else '–'} | {ratio_t} | {ratio_m} |")


if __name__ == "__main__":
    main()

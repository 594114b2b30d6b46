"""Time the PTA loss + backward on CPU, one thread (cf. docs/methods.md §4.5).

Setting: IPC 10 synthetic points per class, 512-d L2-normalised features, real pool 50 per class,
mutual k-NN with k = 10, 32 × 32 persistence images, size-matched real targets (M = 16 subsets),
cutoff ``joint``. "cached" reuses targets built once; "recomputed" rebuilds them in every call.

    PYTHONPATH=src python benchmarks/bench_pta.py [--repeats 5] [--classes 10 100]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from reta.topology import TopologyLoss
from reta.utils.markdown import md_table


def _median_ms(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench(num_classes: int, repeats: int, ipc: int = 10, dim: int = 512, pool: int = 50) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    pools = [F.normalize(torch.randn(pool, dim, generator=gen), dim=1) for _ in range(num_classes)]
    syn_init = [F.normalize(torch.randn(ipc, dim, generator=gen), dim=1) for _ in range(num_classes)]
    ids = list(range(num_classes))
    module = TopologyLoss(k=10, grid=32, sigma=0.05, num_subsets=16, seed=0)

    def build() -> None:
        module.cache_real_targets(dict(enumerate(pools)), ipc)

    def step(real_pools: list[torch.Tensor] | None) -> None:
        syn = [z.clone().requires_grad_() for z in syn_init]
        module(syn, ids, real_pools=real_pools).backward()

    build_ms = _median_ms(build, repeats)
    return {
        "cached": _median_ms(lambda: step(None), repeats),
        "recomputed": _median_ms(lambda: step(pools), repeats),
        "build": build_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"PTA loss + backward, CPU, 1 thread, torch {torch.__version__}; median of {args.repeats} (ms)")
    print("IPC 10 synthetic, 512-d, real pool 50/class, k 10, G 32, M 16 size-matched subsets, cutoff joint")
    print()
    rows = []
    for c in args.classes:
        r = bench(c, args.repeats)
        rows.append([c, f"{r['cached']:.1f}", f"{r['recomputed']:.1f}", f"{r['build']:.1f}"])
    print(md_table(["classes", "real targets cached", "real targets recomputed", "build targets alone"], rows))


if __name__ == "__main__":
    main()

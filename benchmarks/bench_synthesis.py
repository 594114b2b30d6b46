"""Seconds per synthetic image and peak memory of SRe2L, FADRM and FADRM+ synthesis on this CPU (cf. docs/methods.md §8
"Cost per image", measured there on an RTX 4090 at ImageNet-1K scale).

Each method runs ``reta-distill``'s code path (``reta.distill.run``) in a fresh child process, so the peak resident
set size (``ru_maxrss``) belongs to that method alone; teachers and patch pools come from the shared cache (train
them first, e.g. by running the method once). Reported per method:

* ``s_per_image`` — wall time of the synthesis loop (sum over jobs) / number of synthetic images;
* ``s_per_image_total`` — wall time of the whole distill call (teacher loading, patch scoring, writing) / images;
* ``cpu_s_per_image_total`` — CPU time (user + system) of the distill call / images: with one thread this is what the
  wall time would be on an idle machine (a loaded shared CPU inflates the wall times, not this);
* ``peak_rss_mb`` — peak RSS of the child; ``rss_before_mb`` — RSS after imports, before the distill call.

    nice python benchmarks/bench_synthesis.py [--ipc 10] [--methods sre2l fadrm fadrm_plus] [--threads 1]
        [--cache-dir .cache/reta] [--out outputs/bench_synthesis] [overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(method: str, ipc: int, threads: int, cache_dir: str, overrides: list[str]) -> dict:
    import torch
    from hydra import compose, initialize_config_dir

    from reta import distill

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        with initialize_config_dir(config_dir=str(REPO / "src" / "reta" / "conf"), version_base="1.3"):
            cfg = compose("distill", [f"method={method}", f"ipc={ipc}", f"num_threads={threads}", "logger=none",
                                      "progress_bar=false", f"paths.cache_dir={cache_dir}", f"paths.output_dir={tmp}",
                                      *overrides])
        before = _rss_mb()
        start, cpu0 = time.perf_counter(), time.process_time()
        result = distill.run(cfg)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu0
        meta = json.loads((Path(result["distilled"]) / "meta.json").read_text())
    n = int(meta["num_classes"]) * int(meta["ipc"])
    synth = sum(meta["synthesis"]["seconds_per_job"])
    return {
        "method": method, "ipc": ipc, "images": n, "steps_per_job": sum(meta["synthesis"]["schedule"]["budgets"]),
        "teachers": meta["synthesis"]["round_robin"], "s_per_image": synth / n, "s_per_image_total": total / n,
        "cpu_s_per_image_total": cpu / n,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": before,
        "threads": threads, "torch": torch.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--methods", nargs="+", default=["sre2l", "fadrm", "fadrm_plus"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=str(REPO / ".cache" / "reta"))
    ap.add_argument("--out", default=str(REPO / "outputs" / "bench_synthesis"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every method")
    args = ap.parse_args()
    if args.child:
        print("BENCH " + json.dumps(child(args.child, args.ipc, args.threads, args.cache_dir, args.overrides)))
        return
    rows = []
    for method in args.methods:
        cmd = [sys.executable, __file__, "--child", method, "--ipc", str(args.ipc), "--threads", str(args.threads),
               "--cache-dir", args.cache_dir, *args.overrides]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{method}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(line[len("BENCH "):]))
    print(f"\nsynthesis cost, IPC {args.ipc}, {args.threads} thread(s), this CPU")
    print(f"{'method':<12} {'s/image':>8} {'s/image (total)':>16} {'CPU s/image (total)':>20} {'peak RSS MB':>12} "
          f"{'RSS before MB':>14}  teachers")
    for r in rows:
        print(f"{r['method']:<12} {r['s_per_image']:>8.3f} {r['s_per_image_total']:>16.3f} "
              f"{r['cpu_s_per_image_total']:>20.3f} "
              f"{r['peak_rss_mb']:>12.0f} {r['rss_before_mb']:>14.0f}  {', '.join(r['teachers'])}")
    print(f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()

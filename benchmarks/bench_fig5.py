"""Figure 5: synthesis cost per image of SRe2L, RDED, EDC, CV-DD, FADRM, FADRM+ and RETA — time and peak memory.

Every method runs through its real entry point (``method.synthesize`` of its config, as ``reta-distill`` calls it) on
Fashion-MNIST-shaped data (1×28×28, 10 classes, ``--mipc`` random images per class) with randomly initialised
teachers of the configured architectures whose BN running statistics are measured on the data (cost does not
depend on the weights; the pieces are shared with ``bench_reta.py``). Each run starts cold: no patch-pool or
feature-pool cache, so RDED's and FADRM's crop scoring and RETA's feature pool are part of the cost, as in a first
run. Methods are interleaved (order reversed every other
repeat) and repeated; medians are reported with the median paired ratio to FADRM+ per repeat. ``fadrm_plus(again)``
is FADRM+ a second time (an A/A control: its ratio's distance from 1 is the noise of the measurement).

Per image: wall seconds, CPU seconds (``time.process_time``; with one thread, the wall time an idle CPU would give)
and peak memory. On the CPU the peak is the largest resident-set growth over the run's start (``/proc/self/statm``
sampled every 5 ms, after returning freed heap to the OS); on a GPU the time is wall time with the device synchronised
and the memory ``torch.cuda.max_memory_allocated`` (reset per run).

    nice .venv/bin/python benchmarks/bench_fig5.py [--ipc 1] [--repeats 2] [--mipc 300] [--out experiments/fig5]

writes ``fig5.json``, ``fig5.md`` and ``fig5.png`` (time and memory bars side by side) under ``--out``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from reta.data.augment import normalize
from reta.synthesis.registry import DistillContext, synthesis_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_reta import CONF, dataset, interleaved, paired_ratios, random_teacher_loader  # noqa: E402

METHODS = {
    "sre2l": ["method=sre2l"],
    "rded": ["method=rded"],
    "edc": ["method=edc"],
    "cvdd": ["method=cvdd"],
    "fadrm": ["method=fadrm"],
    "fadrm_plus": ["method=fadrm_plus"],
    "fadrm_plus(again)": ["method=fadrm_plus"],  # A/A control
    "reta": ["method=reta"],
}
REF = "fadrm_plus"


class PeakRSS:
    """Largest resident-set growth (bytes) over the value at ``__enter__``, sampled by a thread (Linux)."""

    def __init__(self, every: float = 0.005) -> None:
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(self.every)

    def __enter__(self):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so earlier runs do not hide this one's
        except OSError:
            pass
        self.base = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss() - self.base)


def calibrated_loader(cfg, train, num_classes: int = 10):
    """``bench_reta``'s random teachers with BN running statistics measured on 500 training images (cumulative
    average), so that BN matching pulls towards the data as with a trained teacher instead of saturating the pixels."""
    load = random_teacher_loader(cfg, num_classes)
    x = normalize(train.gather(torch.arange(min(500, len(train.targets)))), cfg.dataset.mean, cfg.dataset.std)

    def calibrated(model_cfg):
        model, meta = load(model_cfg)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        with torch.no_grad():
            model(x)
        return model.eval(), meta

    return calibrated


def run_one(overrides: list[str], train, tmp: Path, cuda: bool) -> dict:
    """One cold synthesis through the method's entry point; per-image wall s, CPU s and peak bytes."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("distill", [*overrides, "paths.cache_dir=null", f"paths.output_dir={tmp / 'out'}",
                                  "logger=none", "progress_bar=false", f"trainer={'gpu' if cuda else 'cpu'}",
                                  "dataset.num_classes=10",
                                  f"dataset.class_names=[{','.join(f'c{c}' for c in range(10))}]"])
    fn = synthesis_function(cfg.method)
    ctx = DistillContext(train, train, tmp / "out", tmp / "out" / "ckpt", calibrated_loader(cfg, train))
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    cpu0, t0 = time.process_time(), time.perf_counter()
    with warnings.catch_warnings(), PeakRSS() as rss:
        warnings.simplefilter("ignore")
        result = fn(cfg, ctx)
        if cuda:
            torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = int(result.images.shape[0])
    peak = torch.cuda.max_memory_allocated() if cuda else rss.peak
    return {"wall": wall / n, "cpu": cpu / n, "peak_mb": peak / 2**20}


def overrides_for(method: str, ipc: int, mipc: int, num_crop: int, steps: int | None) -> list[str]:
    """The method's config with the candidate pool of ``mipc`` × ``num_crop`` crops (both pool-based families) and,
    with ``steps``, every optimisation stage cut to that many steps (a quick run; the default keeps each config's)."""
    base = [*METHODS[method], f"ipc={ipc}", "++method.saturation_limit=1.0"]
    if method == "rded":
        return [*METHODS[method], f"ipc={ipc}", f"method.mipc={mipc}", f"method.num_crop={num_crop}"]
    base += [f"method.init.mipc={mipc}", f"method.init.num_crop={num_crop}", "method.checkpoint_every=0"]
    if steps is not None:
        n_stages = {"sre2l": 1, "edc": 1, "cvdd": 1}.get(method, 4)
        base.append(f"method.stages.budgets=[{','.join([str(steps)] * n_stages)}]")
    return base


def table(res: dict) -> str:
    """Markdown: medians per image and the median paired ratios to FADRM+."""
    dev = res["device"]
    lines = [f"Synthesis cost per image, Fashion-MNIST shape, IPC {res['ipc']}, pool {res['mipc']}×{res['num_crop']}, "
             f"{res['repeats']} interleaved repeats, {dev}; medians; ratios = median of the per-repeat ratios to "
             "FADRM+ (fadrm_plus(again): the A/A control).", "",
             "| method | wall s/image | CPU s/image | peak MiB | wall /FADRM+ | CPU /FADRM+ | peak /FADRM+ |",
             "|---|---|---|---|---|---|---|"]
    for m, v in res["median"].items():
        r = res["paired_ratio"]
        lines.append(f"| {m} | {v['wall']:.4f} | {v['cpu']:.4f} | {v['peak_mb']:.1f} | {r['wall'][m]:.3f} | "
                     f"{r['cpu'][m]:.3f} | {r['peak_mb'][m]:.3f} |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    """Bars per method: time per image (left) and peak memory (right), as the paper's Fig. 5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in res["median"] if m != f"{REF}(again)"]
    key = "wall" if res["device"] != "cpu" else "cpu"
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 3.8))
    times = [res["median"][m][key] for m in methods]
    mems = [res["median"][m]["peak_mb"] for m in methods]
    colors = ["tab:red" if m == "reta" else "tab:blue" if m == REF else "tab:gray" for m in methods]
    for ax, vals, label in ((ax_t, times, f"{'CPU' if key == 'cpu' else 'GPU wall'} s / image"),
                            (ax_m, mems, "peak MiB" + (" (CUDA allocated)" if key != "cpu" else " (RSS growth)"))):
        bars = ax.bar(methods, vals, color=colors)
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_ylabel(label)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"Synthesis cost per image (IPC {res['ipc']}, {res['device']})")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mipc", type=int, default=300)
    parser.add_argument("--num-crop", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="steps per stage (default: each config's own)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=str, default="experiments/fig5")
    args = parser.parse_args()
    if REF not in args.methods:
        parser.error(f"--methods must include {REF} (the ratios' reference)")
    cuda = torch.cuda.is_available()
    torch.set_num_threads(1)
    train = dataset(10, args.mipc)
    runs: dict[str, list[dict]] = {m: [] for m in args.methods}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)

        def measure(r: int, m: str) -> None:
            runs[m].append(run_one(overrides_for(m, args.ipc, args.mipc, args.num_crop, args.steps), train, tmp, cuda))
            v = runs[m][-1]
            print(f"  repeat {r} {m:18s} {v['wall']:.4f} s/image wall  {v['cpu']:.4f} CPU s/image  "
                  f"{v['peak_mb']:.1f} MiB", flush=True)

        measure(0, "sre2l")  # warm-up (imports, first allocations), not recorded
        runs["sre2l"].clear()
        interleaved(args.methods, args.repeats, measure)
    fields = ("wall", "cpu", "peak_mb")
    per = {f: {m: [v[f] for v in runs[m]] for m in runs} for f in fields}
    res = {
        "device": torch.cuda.get_device_name() if cuda else "cpu", "ipc": args.ipc, "mipc": args.mipc,
        "num_crop": args.num_crop, "repeats": args.repeats, "steps": args.steps, "torch_threads": 1,
        "median": {m: {f: statistics.median(per[f][m]) for f in fields} for m in runs},
        "paired_ratio": {f: {m: statistics.median(v) for m, v in paired_ratios(per[f], REF).items()} for f in fields},
        "runs": runs, "load_average": list(os.getloadavg()),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = table(res)
    print(md)
    for name, text in (("fig5.json", json.dumps(res, indent=2)), ("fig5.md", md)):
        (out / f"{name}.tmp").write_text(text)
        os.replace(out / f"{name}.tmp", out / name)
    plot(res, out / "fig5.png")
    print(f"written: {out / 'fig5.md'}, {out / 'fig5.json'}, {out / 'fig5.png'}")


if __name__ == "__main__":
    main()

"""RETA cost on CPU, one thread: seconds per synthetic image (RETA vs FADRM / FADRM+) and the PTA step cost.

Part A — end to end. The method configs of ``conf/method`` (fadrm, fadrm_plus, reta with DRC and/or PTA switched off)
are built by the real builder (:func:`reta.synthesis.bn.family.build_synthesis`) on Fashion-MNIST-shaped data
(1×28×28, 10 classes, 300 images per class, random pixels) with randomly initialised teachers of the configured
architectures (timing does not depend on the weights), and fitted with a Lightning Trainer; seconds per image =
Σ job seconds / images, and CPU seconds of the whole fit / images (one thread: the wall time an idle CPU would give;
use it on a shared machine). The teacher-scored patch pool, shared with FADRM, comes from the cache; RETA's feature
pool (DRC/PTA) comes from its disk cache as a second run finds it (a warm-up RETA run fills it), or is rebuilt in
every run with ``--cold-pool`` (a first run). Methods are interleaved (order reversed every other repeat) and
repeated; medians are reported, and the median (with quartiles) of the paired per-repeat CPU ratios to FADRM+.
``fadrm_plus(again)`` is FADRM+ a second time: its paired ratio to FADRM+ (true value 1) shows the noise of the
measurement on the machine as loaded.

Part B — PTA per step at 10 and 100 classes (one image per class per batch, IPC 10 clouds, ConvNet-3 w64 teacher,
576-d features, pool 300, k 10, 32×32 PI, M 16): (1) the topology loss + backward alone on cached targets
(``bench_pta.bench``), (2) the whole callback term — separate teacher forward, loss, backward through the teacher —
as the difference of synthesis step times with and without PTA, and (3) one refresh (synthetic cache + M real subsets).

    nice .venv/bin/python benchmarks/bench_reta.py [--ipc 3] [--repeats 3] [--classes 10 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from reta.data.base import TensorImageDataset
from reta.models import build_model
from reta.synthesis.bn.family import build_synthesis
from reta.synthesis.registry import DistillContext

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pta import bench as bench_pta_loss  # noqa: E402

CONF = str(Path(__file__).resolve().parent.parent / "src" / "reta" / "conf")
METHODS = {
    "fadrm": ["method=fadrm"],
    "fadrm_plus": ["method=fadrm_plus"],
    "fadrm_plus(again)": ["method=fadrm_plus"],  # A/A control: the same method twice shows the measurement's noise
    # on Fashion-MNIST the reta config switches DRC off (held-out choice, experiments/drc_ipc10); these rows set it
    "fadrm_plus+drc": ["method=reta", "method.callbacks.pta.enabled=false", "method.residual.anchors.enabled=true"],
    "fadrm_plus+pta": ["method=reta", "method.residual.anchors.enabled=false"],
    "reta": ["method=reta"],
    "reta(drc)": ["method=reta", "method.residual.anchors.enabled=true"],
    "reta(pta=separate)": ["method=reta", "method.callbacks.pta.features=separate"],
    "reta(pta=step)": ["method=reta", "method.callbacks.pta.features=step"],
    "reta(targets=refresh)": ["method=reta", "method.callbacks.pta.targets=refresh"],
    "reta(every=1)": ["method=reta", "method.callbacks.pta.every=1"],
    "reta(every=2)": ["method=reta", "method.callbacks.pta.every=2"],
    "reta(every=4)": ["method=reta", "method.callbacks.pta.every=4"],
    "reta(every=8)": ["method=reta", "method.callbacks.pta.every=8"],
    "fadrm+drc": ["method=fadrm_drc"],
    "fadrm+pta": ["method=fadrm_pta"],
}


def dataset(num_classes: int, per_class: int, size: int = 28, seed: int = 0) -> TensorImageDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat(per_class)
    images = torch.randint(0, 256, (len(labels), 1, size, size), generator=g, dtype=torch.uint8)
    return TensorImageDataset(images, labels, [f"c{c}" for c in range(num_classes)])


def random_teacher_loader(cfg, num_classes: int):
    def load(model_cfg):
        mc = dict(model_cfg) if model_cfg is not None else dict(cfg.model)
        torch.manual_seed(0)
        model = build_model(mc, num_classes, 1, 28).eval()
        return model, {"name": mc["name"], "key": json.dumps(mc, sort_keys=True, default=str), "test_acc": 0.0}

    return load


def synthesize(
    overrides: list[str], train, tmp: Path, num_classes: int, callbacks_extra=()
) -> tuple[float, int, object]:
    """Build and fit one synthesis; returns (Σ job seconds, #images, module)."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("distill", [*overrides, f"paths.cache_dir={tmp / 'cache'}", f"paths.output_dir={tmp / 'out'}",
                                  "logger=none", "progress_bar=false", f"dataset.num_classes={num_classes}",
                                  # random teachers on random pixels saturate images (e.g. lr 0.25 at IPC 1); the
                                  # cost does not depend on the content, so the divergence guard only stops at 100 %
                                  "++method.saturation_limit=1.0",
                                  f"dataset.class_names=[{','.join(f'c{c}' for c in range(num_classes))}]"])
    ctx = DistillContext(train, train, tmp / "out", tmp / "out" / "ckpt", random_teacher_loader(cfg, num_classes))
    module, callbacks, _ = build_synthesis(cfg, ctx)
    callbacks = [cb for cb in callbacks if type(cb).__name__ != "SynthesisCheckpoint"] + list(callbacks_extra)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, callbacks=callbacks)
    cpu0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module)
    module.bench_callbacks = callbacks
    module.bench_cpu_seconds = time.process_time() - cpu0  # one thread: what the wall time would be on an idle CPU
    return sum(module.job_seconds), module.images.data.shape[0], module


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile); a single value is all three."""
    if len(values) < 2:
        return (values[0],) * 3
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def interleaved(methods: list[str], repeats: int, measure) -> None:
    """``measure(repeat, method)`` for every method, ``repeats`` times, the order reversed every other repeat (no
    method always goes first), so the runs of one repeat are adjacent in time."""
    for r in range(repeats):
        for m in methods if r % 2 == 0 else methods[::-1]:
            measure(r, m)


def paired_ratios(values: dict[str, list[float]], ref: str) -> dict[str, list[float]]:
    """Each repeat's value over the same repeat's ``ref`` (a load change between repeats cancels); {} without ref."""
    if ref not in values:
        return {}
    return {m: [a / b if b else float("nan") for a, b in zip(v, values[ref])] for m, v in values.items()}


def part_a(ipc: int, repeats: int, methods: list[str], mipc: int, cold_pool: bool = False) -> dict:
    train = dataset(10, mipc)
    common = [f"ipc={ipc}", f"method.init.mipc={mipc}", "method.init.num_crop=1"]
    times: dict[str, list[float]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        synthesize(["method=fadrm", *common, "ipc=1"], train, tmp, 10)  # warm-up + build the cached patch pool
        if cold_pool:
            print("  [A] the RETA feature pool is rebuilt in every run (--cold-pool)")
        else:  # and RETA's feature pool (disk-cached per teacher + patch pool), as a second run would find it; at
            # the timed IPC (at IPC 1 the Fashion-MNIST RETA has DRC and PTA off and never builds the pool)
            synthesize(["method=reta", *common], train, tmp, 10)

        def measure(r: int, m: str) -> None:
            if cold_pool:
                shutil.rmtree(tmp / "cache" / "feature_pools", ignore_errors=True)
            seconds, n, module = synthesize([*METHODS[m], *common], train, tmp, 10)
            times[m].append(seconds / n)
            cpu[m].append(module.bench_cpu_seconds / n)
            print(f"  [A] repeat {r} {m:18s} {seconds / n:.4f} s/image (wall)  {cpu[m][-1]:.4f} CPU s/image",
                  flush=True)

        interleaved(methods, repeats, measure)
    med = {m: statistics.median(v) for m, v in times.items()}
    med_cpu = {m: statistics.median(v) for m, v in cpu.items()}
    paired = paired_ratios(cpu, "fadrm_plus")
    return {"paired_cpu_ratio_vs_fadrm_plus": {m: _quartiles(v) for m, v in paired.items()},
            "paired_cpu_ratios": paired, "seconds_per_image": med, "cpu_seconds_per_image": med_cpu, "all": times,
            "all_cpu": cpu,
            "ratio_vs_fadrm": {m: med[m] / med["fadrm"] for m in med if "fadrm" in med},
            "ratio_vs_fadrm_plus": {m: med[m] / med["fadrm_plus"] for m in med if "fadrm_plus" in med},
            "cpu_ratio_vs_fadrm_plus": {m: med_cpu[m] / med_cpu["fadrm_plus"] for m in med_cpu
                                        if "fadrm_plus" in med_cpu}}


class StepTimer(L.Callback):
    def __init__(self):
        self.t0, self.times = None, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter() - self.t0)


def part_b(classes: list[int], repeats: int) -> dict:
    out = {}
    for c in classes:
        loss = bench_pta_loss(c, repeats, ipc=10, dim=576, pool=300)
        train = dataset(c, 30)
        common = ["method=fadrm_pta", "model=convnet_d3_w64", "ipc=10", "method.stages.sizes=[28]",
                  "method.stages.budgets=[20]", "method.init.mipc=30", "method.init.num_crop=1",
                  "method.residual.enabled=false", "method.callbacks.pta.refresh_every=1000"]
        step = {}
        with tempfile.TemporaryDirectory() as d:
            for label, extra in (("without", ["method.callbacks.pta.enabled=false"]), ("with", [])):
                timer = StepTimer()
                _, _, module = synthesize([*common, *extra], train, Path(d), c, [timer])
                # median step over all jobs, the refresh steps (first of each job) excluded
                per_job = module.schedule.total
                times = [t for i, t in enumerate(timer.times) if i % per_job != 0]
                step[label] = statistics.median(times)
                if label == "with":
                    pta = next(cb for cb in module.bench_callbacks if type(cb).__name__ == "TopologyAlignment")
                    refresh_t = []
                    for _ in range(repeats):

                        class S:  # a stand-in step of job 1 for a timed refresh
                            slot, job, stage, step, resolution = 1, 1, 0, 0, 28
                            classes = torch.arange(c)
                            images = module.images.data[:c]

                        t = time.perf_counter()
                        pta.refresh(S)
                        refresh_t.append(time.perf_counter() - t)
                    step["refresh"] = statistics.median(refresh_t)
        out[c] = {"loss_backward_cached_ms": loss["cached"], "targets_build_ms": loss["build"],
                  "step_without_ms": 1e3 * step["without"], "step_with_ms": 1e3 * step["with"],
                  "pta_term_ms": 1e3 * (step["with"] - step["without"]), "refresh_ms": 1e3 * step["refresh"]}
        print(f"  [B] {c} classes: {out[c]}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, default=3)
    parser.add_argument("--mipc", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--cold-pool", action="store_true",
                        help="rebuild RETA's feature pool in every run (no disk cache), as a first run does")
    parser.add_argument("--skip-a", action="store_true")
    parser.add_argument("--skip-b", action="store_true")
    parser.add_argument("--json", type=str, default=None, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {"torch_threads": torch.get_num_threads()}
    if not args.skip_a:
        print(f"Part A: seconds per image, Fashion-MNIST shape, 4 × 50 steps, IPC {args.ipc}, pool {args.mipc}")
        result["A"] = part_a(args.ipc, args.repeats, args.methods, args.mipc, args.cold_pool)
        a = result["A"]
        print(f"{'method':18s} {'s/image':>9s} {'/FADRM':>7s} {'/FADRM+':>8s} "
              f"{'CPU s/image':>12s} {'CPU /FADRM+':>12s}")
        for m, v in a["seconds_per_image"].items():
            print(f"{m:18s} {v:9.4f} {a['ratio_vs_fadrm'].get(m, float('nan')):7.3f} "
                  f"{a['ratio_vs_fadrm_plus'].get(m, float('nan')):8.3f} {a['cpu_seconds_per_image'][m]:12.4f} "
                  f"{a['cpu_ratio_vs_fadrm_plus'].get(m, float('nan')):12.3f}")
        for m, (q1, q2, q3) in a["paired_cpu_ratio_vs_fadrm_plus"].items():
            if m != "fadrm_plus":
                ratios = " ".join(f"{v:.2f}" for v in a["paired_cpu_ratios"][m])
                print(f"paired CPU ratio {m} / fadrm_plus: median {q2:.3f} (quartiles {q1:.3f}-{q3:.3f}); {ratios}")
        print(f"load average: {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    if not args.skip_b:
        print("Part B: PTA per step (ms), IPC 10 clouds, 576-d, pool 300, k 10, G 32, M 16")
        result["B"] = part_b(args.classes, args.repeats)
        print(f"{'classes':>7s} {'loss+bwd':>9s} {'targets':>8s} {'step w/o':>9s} {'step w/':>8s} "
              f"{'PTA term':>9s} {'refresh':>8s}")
        for c, r in result["B"].items():
            print(f"{c:7d} {r['loss_backward_cached_ms']:9.1f} {r['targets_build_ms']:8.1f} "
                  f"{r['step_without_ms']:9.1f} "
                  f"{r['step_with_ms']:8.1f} {r['pta_term_ms']:9.1f} {r['refresh_ms']:8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()

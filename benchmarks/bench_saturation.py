"""Pixel saturation of BN-matching synthesis — the evidence behind the divergence guard (``method.saturation_limit``,
default 0.95) and the lr range check (``reta.synthesis.bn.family.check_lr``).

For each method × lr, one ``reta.distill.run`` on Fashion-MNIST records, at every step, the fraction of the working
batch's pixels at 0 or 1 (a callback reads ``step.images``). Printed as a Markdown table: the largest fraction seen,
at which step, and how the run ended. ``lr=1e30`` lies outside the allowed range, so for that row the range check is
switched off (monkeypatched) to show what the guard does on its own. The teacher is trained once into ``--cache-dir``
(a 1-epoch ConvNet-tiny by default: this measures the synthesis dynamics, not the set's quality).

    nice python benchmarks/bench_saturation.py [--ipc 2] [--steps 30] [--seed 0] [--cache-dir .cache/reta]
        [--lrs stock 1.0 2.8 1e30] [--methods sre2l fadrm]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parent.parent


class SaturationProbe(L.Callback):
    """Appends each step's fraction of pixels at 0 or 1 (pixel space, 1e-6 tolerance) to :attr:`fractions`."""

    fractions: list[float] = []

    def on_synthesis_step(self, trainer, module, step) -> None:
        m = torch.tensor(module.mean, device=step.images.device).view(1, -1, 1, 1)
        s = torch.tensor(module.std, device=step.images.device).view(1, -1, 1, 1)
        px = step.images.detach() * s + m
        SaturationProbe.fractions.append(float(((px <= 1e-6) | (px >= 1 - 1e-6)).float().mean()))


def one(method: str, lr: str, args, out: Path) -> dict:
    from reta import distill
    from reta.errors import DivergenceError
    from reta.synthesis.bn import family

    budgets = f"[{args.steps}]" if method == "sre2l" else f"[{args.steps // 2},{args.steps - args.steps // 2}]"
    overrides = [f"method={method}", f"ipc={args.ipc}", f"seed={args.seed}", f"model={args.model}",
                 "recipe.epochs=1", "logger=none", "progress_bar=false", "num_threads=1",
                 f"paths.cache_dir={args.cache_dir}", f"paths.output_dir={out}", f"method.stages.budgets={budgets}",
                 "method.init.mipc=20", "+method.callbacks.probe={_target_:__main__.SaturationProbe}"]
    if lr != "stock":
        overrides.append(f"method.lr={lr}")
    with initialize_config_dir(config_dir=str(REPO / "src" / "reta" / "conf"), version_base="1.3"):
        cfg = compose("distill", overrides)
    SaturationProbe.fractions = []
    real_check = family.check_lr
    outside = lr != "stock" and float(lr) > max(1 / float(v) for v in cfg.dataset.std)
    if outside:
        family.check_lr = lambda value, std: float(value)
    try:
        distill.run(cfg)
        ended = "finished"
    except DivergenceError as err:
        ended = f"DivergenceError ({str(err).split(':')[0]})"
    finally:
        family.check_lr = real_check
    f = SaturationProbe.fractions
    peak = max(range(len(f)), key=f.__getitem__) if f else None
    return {"method": method, "lr": lr + (" (range check off)" if outside else ""), "steps seen": len(f),
            "first": f[0] if f else None, "max": f[peak] if f else None, "max at step": peak, "ended": ended}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ipc", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="convnet_tiny")
    ap.add_argument("--cache-dir", default=".cache/reta")
    ap.add_argument("--methods", nargs="+", default=["sre2l", "fadrm"])
    ap.add_argument("--lrs", nargs="+", default=["stock", "1.0", "2.8", "1e30"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for method in args.methods:
        for lr in args.lrs:
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(one(method, lr, args, Path(tmp) / "out"))
    cols = list(rows[0])
    print(f"Fashion-MNIST, IPC {args.ipc}, seed {args.seed}, {args.steps} steps per job, teacher {args.model}")
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")


if __name__ == "__main__":
    main()

"""Framework overhead of reta's BN-matching step: the same synthesis as reta runs it vs a bare PyTorch loop.

One process, one thread, interleaved slots (reta, bare, reta, bare, …) so both see the same machine load. A *slot* is
one IPC slot of a 10-class Fashion-MNIST-shaped set (one image per class per batch) synthesised for ``--steps`` steps
against the same frozen, randomly initialised teacher (``--model``, default ConvNet-3 w64 BN; timing does not depend on
the weights):

* **reta** — ``method=sre2l`` with the FADRM augmentation (``method.augment.rrc=true``: batch-shared
  RandomResizedCrop + flip + roll jitter), built by the real builder (:func:`reta.synthesis.bn.family.build_synthesis`,
  all its callbacks including the resume checkpoint) and fitted with reta's own Trainer (:func:`build_trainer`);
* **bare** — a plain loop of the same step: ``x`` from the same noise, the same augmentation function
  (:func:`reta.synthesis.bn.module.synthesis_augment`, same generator stream), teacher forward with plain forward hooks
  on its BN layers, ``CE + r_bn·Σ_l m_l(‖μ_l − μ_run‖ + ‖σ²_l − σ²_run‖)``, ``Adam(betas=(0.5, 0.9))`` with the same
  cosine LR, backward, step, clamp to the normalised image of [0, 1].

Both produce the same images (checked: max |Δ| is printed), so the ratio is pure framework cost: the Lightning fit
loop, the step dataclass and callback dispatch, logging, checkpointing. Wall time per slot is the whole ``fit`` call
(what a user waits for); the median over ``--repeats`` slots of each is compared.

    nice python benchmarks/bench_overhead.py [--steps 1000] [--repeats 3] [--model convnet_d3_w64]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import nn

from reta.data.base import TensorImageDataset
from reta.models import build_model
from reta.synthesis.bn.family import build_synthesis
from reta.synthesis.bn.module import AugmentSpec, synthesis_augment
from reta.synthesis.registry import DistillContext
from reta.training.common import build_trainer
from reta.utils.config import plain

CONF = str(Path(__file__).resolve().parent.parent / "src" / "reta" / "conf")
CLASSES, SIZE = 10, 28


def compose_cfg(steps: int, model: str, tmp: Path):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("distill", [
            "method=sre2l", "ipc=1", f"model={model}", f"method.stages.budgets=[{steps}]", "method.augment.rrc=true",
            "logger=none", "progress_bar=false", "num_threads=1", f"paths.cache_dir={tmp / 'cache'}",
            f"paths.output_dir={tmp / 'out'}",
            # a random teacher drives the pixels to 0/1 (lr 0.25); the guard still runs every step (its cost is part
            # of reta's loop) but stops only at 100 % saturation — the bare loop clamps the same way and never stops
            "++method.saturation_limit=1.0",
        ])


def reta_slot(cfg, teacher: nn.Module, tmp: Path) -> tuple[float, float, torch.Tensor]:
    train = TensorImageDataset(torch.zeros(CLASSES, 1, SIZE, SIZE, dtype=torch.uint8), torch.arange(CLASSES),
                               [str(c) for c in range(CLASSES)])

    def load(model_cfg):
        return copy.deepcopy(teacher), {"name": "bench", "key": "bench", "test_acc": 0.0}

    ctx = DistillContext(train, train, tmp / "out", tmp / "out" / "ckpt", load)
    start, cpu0 = time.perf_counter(), time.process_time()
    module, callbacks, _ = build_synthesis(cfg, ctx)
    trainer = build_trainer(plain(cfg.trainer), 1, False, False, str(tmp / "out"), callbacks=callbacks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module)
    return time.perf_counter() - start, time.process_time() - cpu0, module.images.pixels().clone()


def bare_slot(cfg, teacher: nn.Module) -> tuple[float, float, torch.Tensor]:
    """The same synthesis as a plain PyTorch loop (see the module docstring)."""
    m = cfg.method
    start, cpu0 = time.perf_counter(), time.process_time()
    net = copy.deepcopy(teacher).eval().requires_grad_(False)
    mean, std = list(cfg.dataset.mean), list(cfg.dataset.std)
    steps, lr0, r_bn = int(m.stages.budgets[0]), float(m.lr), float(m.r_bn)
    bn_layers = [mod for mod in net.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    terms: list[torch.Tensor] = []

    def hook(layer, inputs, output):
        a = inputs[0]
        mu, var = a.mean(dim=(0, 2, 3)), a.var(dim=(0, 2, 3), unbiased=False)
        terms.append(torch.linalg.vector_norm(layer.running_mean - mu)
                     + torch.linalg.vector_norm(layer.running_var - var))

    for layer in bn_layers:
        layer.register_forward_hook(hook)
    gen = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + 0)  # job 0's stream, as reta seeds it
    x = nn.Parameter(torch.randn(CLASSES, 1, SIZE, SIZE, generator=gen))
    y = torch.arange(CLASSES)
    opt = torch.optim.Adam([x], lr=lr0, betas=tuple(m.betas), eps=float(m.eps))
    spec = AugmentSpec(bool(m.augment.rrc), tuple(m.augment.rrc_scale), bool(m.augment.flip), int(m.augment.jitter))
    mult = [float(m.first_bn_multiplier)] + [1.0] * (len(bn_layers) - 1)
    lo = torch.tensor([(0 - a) / b for a, b in zip(mean, std, strict=True)]).view(1, -1, 1, 1)
    hi = torch.tensor([(1 - a) / b for a, b in zip(mean, std, strict=True)]).view(1, -1, 1, 1)
    for t in range(steps):
        for group in opt.param_groups:
            group["lr"] = 0.5 * (1.0 + math.cos(math.pi * t / steps)) * lr0
        terms.clear()
        logits = net(synthesis_augment(x, SIZE, spec, gen))
        loss = F.cross_entropy(logits, y) + r_bn * sum(w * term for w, term in zip(mult, terms, strict=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.copy_(torch.max(torch.min(x, hi), lo))
    with torch.no_grad():
        pixels = x.detach() * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    return time.perf_counter() - start, time.process_time() - cpu0, pixels.clamp(0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="convnet_d3_w64")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {"reta": [], "bare": []}
    cpu: dict[str, list[float]] = {"reta": [], "bare": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg = compose_cfg(args.steps, args.model, tmp)
        torch.manual_seed(0)
        teacher = build_model(plain(cfg.model), CLASSES, 1, SIZE).eval()
        with torch.no_grad():  # non-trivial running statistics, so the BN term is not degenerate
            for mod in teacher.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    mod.running_mean.uniform_(-0.5, 0.5)
                    mod.running_var.uniform_(0.5, 2.0)
        diff = float("nan")
        for r in range(args.repeats):
            t_reta, c_reta, img_reta = reta_slot(cfg, teacher, tmp / f"r{r}")
            t_bare, c_bare, img_bare = bare_slot(cfg, teacher)
            diff = float((img_reta - img_bare).abs().max())
            times["reta"].append(t_reta)
            times["bare"].append(t_bare)
            cpu["reta"].append(c_reta)
            cpu["bare"].append(c_bare)
            print(f"  slot {r}: reta {t_reta:7.2f} s ({c_reta:7.2f} CPU s)   bare {t_bare:7.2f} s ({c_bare:7.2f} CPU s)"
                  f"   ratio {t_reta / t_bare:.3f} (CPU {c_reta / c_bare:.3f})   max |Δimage| {diff:.2e}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"\nBN-matching synthesis, {args.model}, {CLASSES} images × {args.steps} steps per slot, 1 thread, "
          f"{args.repeats} interleaved slots each (median)")
    print(f"{'loop':<6} {'s/slot':>8} {'ms/step':>8} {'CPU s/slot':>11}")
    for k in ("reta", "bare"):
        print(f"{k:<6} {med[k]:8.2f} {1e3 * med[k] / args.steps:8.2f} {med_cpu[k]:11.2f}")
    ratio, ratio_cpu = med["reta"] / med["bare"], med_cpu["reta"] / med_cpu["bare"]
    print(f"ratio reta / bare: {ratio:.3f} wall, {ratio_cpu:.3f} CPU (target <= 1.10); "
          f"same images: max |Δ| = {diff:.2e}")
    print(f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps({"times": times, "cpu": cpu, "median": med, "median_cpu": med_cpu,
                                               "ratio": ratio, "ratio_cpu": ratio_cpu, "max_abs_diff": diff,
                                               "steps": args.steps, "model": args.model}, indent=2) + "\n")


if __name__ == "__main__":
    main()

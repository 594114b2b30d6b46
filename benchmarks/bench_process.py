"""Seconds per iteration and peak memory of DC, DSA and MTT synthesis (reta.synthesis.process) against a bare PyTorch
loop of the same iteration, and the expert-buffer build time.

For every method and IPC one subprocess composes the method exactly as ``reta-distill method=M dataset=D ipc=N`` would,
builds reta's matcher and a bare loop (plain tensors, the same network, the same maths, no reta classes), and times
them interleaved — reta, bare, reta, bare, … — after ``--warmup`` iterations of each; the table gives the medians and
their ratio (target ≤ 1.10). Peak memory: CUDA = ``torch.cuda.max_memory_allocated`` per implementation; CPU = the
peak-RSS growth of one iteration in a forked child per implementation. MTT's expert buffer is built first (timed:
``--experts N --expert-epochs E``) and shared by all MTT cells.

    nice .venv/bin/python benchmarks/bench_process.py [--ipcs 1 10] [--methods dc dsa mtt] [--iters 5] [--warmup 1]
        [--dataset fashion_mnist] [--experts 2] [--expert-epochs 3] [--threads 1]
        [--override method.net.kwargs.width=64 mtt:method.syn_steps=10 …]   # M:key=value: method M only
        [--fixture 64]   # a random IDX dataset of 64 images per class instead of the real one (no download)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reta.utils.markdown import md_table

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = str(REPO / "src" / "reta" / "conf")


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _compose(method: str, ipc: int, a) -> object:
    from hydra import compose, initialize_config_dir

    extra = [f"dataset.root={a.root}"] if a.root else []
    if method == "mtt":
        extra += [f"method.experts.num_experts={a.experts}", f"method.experts.epochs={a.expert_epochs}"]
    # "M:key=value" applies to method M only, "key=value" to every method
    mine = [o.split(":", 1)[1] if ":" in o.split("=", 1)[0] else o for o in a.override
            if ":" not in o.split("=", 1)[0] or o.split(":", 1)[0] == method]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("distill", [f"method={method}", f"dataset={a.dataset}", f"ipc={ipc}", *extra,
                                  f"paths.output_dir={a.tmp}/out", f"paths.cache_dir={a.tmp}/cache", *mine])
    # as on reta-distill's command line, a given method key beats the per-IPC block (compose has no HydraConfig)
    given = [o.split("=", 1)[0].lstrip("+").removeprefix("method.") for o in mine + extra
             if o.lstrip("+").startswith("method.")]
    from omegaconf import open_dict

    with open_dict(cfg):
        for block in (cfg.method.get("per_ipc") or {}).values():
            for key in given:
                if block is not None and key.split(".")[0] in block:
                    del block[key.split(".")[0]]
    return cfg


# ---------------------------------------------------------------------------------------------- the bare loops
def bare_gradient(spec, ds, ipc, train, device):
    """One DC/DSA iteration in plain PyTorch (the DC code's loop, docs/methods.md)."""
    import torch
    import torch.nn.functional as F

    from reta.data.dsa import DSA, DSAParams
    from reta.models import build_model

    C = int(ds["num_classes"])
    mean = torch.tensor(ds["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(ds["std"]).view(1, -1, 1, 1)
    real_all = ((train.gather(torch.arange(len(train))) - mean) / std).to(device)
    by_class = [torch.nonzero(train.targets == c).flatten() for c in range(C)]
    img = torch.randn(C * ipc, ds["channels"], ds["image_size"], ds["image_size"], device=device, requires_grad=True)
    labels = torch.arange(C, device=device).repeat_interleave(ipc)
    opt_img = torch.optim.SGD([img], lr=spec.lr_img, momentum=spec.momentum)
    dsa, gen = DSA(DSAParams(**dict(spec.dsa))), torch.Generator().manual_seed(0)

    def dist(gr, gs):
        total = 0.0
        for r, s in zip(gr, gs):
            if r.ndim == 1:
                continue
            r, s = r.reshape(r.shape[0], -1), s.reshape(s.shape[0], -1)
            total = total + (1 - (r * s).sum(-1) / (r.norm(dim=-1) * s.norm(dim=-1) + 1e-6)).sum()
        return total

    def step():
        net = build_model(spec.net, C, ds["channels"], ds["image_size"]).to(device).train()
        params = list(net.parameters())
        opt_net = torch.optim.SGD(params, lr=spec.lr_net)
        for ol in range(spec.outer_loop):
            opt_img.zero_grad()
            for c in range(C):
                idx = by_class[c][torch.randperm(len(by_class[c]), generator=gen)[:spec.batch_real]]
                real, syn = real_all[idx.to(device)], img[c * ipc:(c + 1) * ipc]
                if spec.siamese:
                    sample = dsa.draw(1, gen, shared=True)
                    real, syn = dsa.apply(real, sample), dsa.apply(syn, sample)
                yr = torch.full((len(real),), c, device=device)
                gr = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real), yr), params)]
                gs = torch.autograd.grad(F.cross_entropy(net(syn), labels[c * ipc:(c + 1) * ipc]), params,
                                         create_graph=True)
                dist(gr, gs).backward(inputs=[img])
            opt_img.step()
            if ol == spec.outer_loop - 1:
                break
            x_all = img.detach()
            for _ in range(spec.inner_loop):
                perm = torch.randperm(len(x_all), generator=gen).to(device)
                for b in range(0, len(x_all), spec.batch_train):
                    i = perm[b:b + spec.batch_train]
                    x = dsa(x_all[i], gen) if spec.inner_dsa else x_all[i]
                    opt_net.zero_grad()
                    F.cross_entropy(net(x), labels[i]).backward()
                    opt_net.step()

    return step


def bare_trajectory(spec, ds, ipc, experts, device):
    """One MTT iteration in plain PyTorch: functional unroll over a flat vector, normalised parameter distance."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    from reta.data.dsa import DSA, DSAParams
    from reta.models import build_model

    C = int(ds["num_classes"])
    net = build_model(spec.net, C, ds["channels"], ds["image_size"]).to(device)
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    numels = [p.numel() for p in net.parameters()]
    img = torch.randn(C * ipc, ds["channels"], ds["image_size"], ds["image_size"], device=device, requires_grad=True)
    lr = torch.tensor(spec.lr_teacher, device=device, requires_grad=True)
    labels = torch.arange(C, device=device).repeat_interleave(ipc)
    opt = torch.optim.SGD([{"params": [img], "lr": spec.lr_img}, {"params": [lr], "lr": spec.lr_lr}],
                          momentum=spec.momentum)
    dsa, gen = DSA(DSAParams(**dict(spec.dsa))), torch.Generator().manual_seed(0)
    b = spec.batch_syn or len(img)

    def step():
        traj = experts.trajectories[int(torch.randint(len(experts.trajectories), (1,), generator=gen))]
        t = int(torch.randint(spec.max_start_epoch, (1,), generator=gen))
        start, target = traj[t].to(device), traj[t + spec.expert_epochs].to(device)
        theta, order = start.clone().requires_grad_(True), []
        for _ in range(spec.syn_steps):
            if not order:
                order = list(torch.randperm(len(img), generator=gen).split(b))
            i = order.pop(0).to(device)
            x = dsa(img[i], gen) if dsa.params.ops else img[i]
            p = {n: q.view(s) for n, q, s in zip(names, torch.split(theta, numels), shapes)}
            g = torch.autograd.grad(F.cross_entropy(functional_call(net, p, (x,)), labels[i]), theta,
                                    create_graph=True)[0]
            theta = theta - lr * g
        loss = ((theta - target) ** 2).sum() / ((start - target) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


# ---------------------------------------------------------------------------------------------- one cell
def build(method: str, ipc: int, a):
    import torch

    from reta.data.registry import load_split
    from reta.synthesis.matcher_run import matcher_device
    from reta.synthesis.process.config import GradientSpec, TrajectorySpec
    from reta.synthesis.process.gradient import GradientMatcher
    from reta.synthesis.process.trajectory import TrajectoryMatcher
    from reta.training.experts import entry_path, load_experts
    from reta.utils.config import plain

    cfg = _compose(method, ipc, a)
    ds, device = plain(cfg.dataset), matcher_device(cfg)
    train = load_split(cfg.dataset, "train", cfg.paths.data_dir)
    torch.manual_seed(0)
    if method == "mtt":
        spec = TrajectorySpec.from_cfg(cfg.method, ipc)
        buf = load_experts(entry_path(cfg.paths.cache_dir, ds, spec.net, spec.experts))
        return (TrajectoryMatcher(spec, ds, ipc, train, 0, device, buf).step,
                bare_trajectory(spec, ds, ipc, buf, device), spec, device)
    spec = GradientSpec.from_cfg(cfg.method, ipc)
    return GradientMatcher(spec, ds, ipc, train, 0, device).step, bare_gradient(spec, ds, ipc, train, device), spec, \
        device


def _timed(fn, device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def time_cell(method: str, ipc: int, a) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    reta, bare, spec, device = build(method, ipc, a)
    peaks = {}
    if device.type == "cpu":  # before anything ran in this process, so that neither inherits the other's heap
        peaks = {"reta": cpu_peak_mb(reta), "bare": cpu_peak_mb(bare)}
    for name, fn in (("reta", reta), ("bare", bare)):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(a.warmup):
            fn()
        if device.type == "cuda":
            peaks[name] = torch.cuda.max_memory_allocated() / 2**20
    tr, tb = [], []
    for _ in range(a.iters):
        tr.append(_timed(reta, device))
        tb.append(_timed(bare, device))
    loops = (f"outer {spec.outer_loop} / inner {spec.inner_loop}" if method != "mtt"
             else f"syn_steps {spec.syn_steps}, batch_syn {spec.batch_syn or 'all'}")
    return {"method": method, "ipc": ipc, "reta": statistics.median(tr), "bare": statistics.median(tb),
            "peak_reta": peaks.get("reta"), "peak_bare": peaks.get("bare"), "device": str(device), "loops": loops}


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def cpu_peak_mb(fn) -> float:
    """Peak-RSS growth of one call of ``fn`` in a forked child (its high-water mark reset first, Linux
    ``/proc/self/clear_refs`` 5), so that each implementation is measured on its own."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        Path("/proc/self/clear_refs").write_text("5")
        base = _status_mb("VmRSS")
        fn()
        os.write(w, str(_status_mb("VmHWM") - base).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        out = fh.read()
    os.waitpid(pid, 0)
    return float(out)


def build_experts_timed(a) -> dict:
    from reta.data.registry import load_split
    from reta.training.experts import expert_buffer

    cfg = _compose("mtt", 1, a)
    train = load_split(cfg.dataset, "train", cfg.paths.data_dir)
    t = time.perf_counter()
    buf = expert_buffer(cfg, train, None, Path(a.tmp) / "out")
    r = buf.meta["recipe"]
    return {"seconds": time.perf_counter() - t, "experts": r["num_experts"], "epochs": r["epochs"],
            "images": buf.meta["train_images"]}


def _sub(a, *extra) -> dict:
    cmd = [sys.executable, __file__, "--dataset", a.dataset, "--iters", str(a.iters), "--warmup", str(a.warmup),
           "--threads", str(a.threads), "--experts", str(a.experts), "--expert-epochs", str(a.expert_epochs),
           "--tmp", a.tmp, *(["--root", a.root] if a.root else []), *extra, "--override", *a.override]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})
    if out.returncode:
        sys.exit(f"{' '.join(extra)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["dc", "dsa", "mtt"])
    p.add_argument("--ipcs", nargs="+", type=int, default=[1, 10])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--experts", type=int, default=2)
    p.add_argument("--expert-epochs", type=int, default=3)
    p.add_argument("--fixture", type=int, default=0, help="random IDX dataset of this many images per class")
    p.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides, e.g. method.batch_real=64")
    p.add_argument("--root", default=None, help=argparse.SUPPRESS)
    p.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cell", nargs="+", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.cell:
        kind = a.cell[0]
        if kind == "time":
            res = time_cell(a.cell[1], int(a.cell[2]), a)
        else:
            res = build_experts_timed(a)
        print(json.dumps(res))
        return
    with tempfile.TemporaryDirectory() as tmp:
        a.tmp = tmp
        if a.fixture:
            sys.path.insert(0, str(REPO / "tests"))
            from fixtures import write_idx_dataset

            a.root = str(write_idx_dataset(Path(tmp) / "fixture", n_train=a.fixture * 10, n_test=20, classes=10,
                                           gz=False))
        experts = _sub(a, "--cell", "experts") if "mtt" in a.methods else None
        rows = []
        for m in a.methods:
            for ipc in a.ipcs:
                rows.append(_sub(a, "--cell", "time", m, str(ipc)))
    import torch

    print(f"Process matching on {a.dataset}{f' (random fixture, {a.fixture}/class)' if a.fixture else ''}, "
          f"{rows[0]['device']}, {a.threads} thread(s), torch {torch.__version__}; median of {a.iters} interleaved "
          f"iterations after {a.warmup} warm-up")
    if a.override:
        print(f"overrides: {' '.join(a.override)}")
    print()
    print(md_table(["method", "IPC", "loops", "reta s/it", "bare s/it", "ratio", "reta peak MiB", "bare peak MiB"],
                   [[r["method"], r["ipc"], r["loops"], f"{r['reta']:.3f}", f"{r['bare']:.3f}",
                     f"{r['reta'] / r['bare']:.2f}", f"{r['peak_reta']:.0f}", f"{r['peak_bare']:.0f}"] for r in rows]))
    if experts:
        print()
        print(f"expert buffer: {experts['experts']} experts x {experts['epochs']} epochs on {experts['images']} "
              f"images built in {experts['seconds']:.1f} s "
              f"({experts['seconds'] / (experts['experts'] * experts['epochs']):.2f} s per expert-epoch)")


if __name__ == "__main__":
    main()

"""The ``distribution`` method kind: DM, IDM and their IID variants (METHODS.md §6).

One loop, two variants (``method.variant``):

``dm`` [code: VICO-UoE/DatasetCondensation ``main_DM.py``]
    every iteration a *freshly initialised* embedder ψ (ConvNet, instance norm; frozen); per class c a batch of
    ``batch_real`` real images of c and the IPC synthetic images of c go through ONE shared DSA draw (Siamese,
    :meth:`reta.data.dsa.DSA.siamese`), then ``L_c = ‖mean ψ(real) − mean ψ(syn)‖²``; the class losses are summed and
    the images take one SGD step (lr 1, momentum 0.5). Gradients are accumulated class by class (same gradient as
    one backward of the sum, a class-sized graph at a time).
``idm`` [code: uitrbn/IDM ``IDM_cifar10.py`` with the published ``command.txt`` flags]
    the embedder is drawn from a *queue of partially trained ConvNets* (starts with ``queue.initial`` random nets,
    one new net every ``queue.push_every`` iterations, at most ``queue.capacity``, oldest dropped); per class the
    loss adds ``ce_weight · acc · CE(ψ(syn), c)`` (acc: the net's running training accuracy in percent) and the
    images take one SGD step *per class*; afterwards ``queue.train_nets`` random queue nets take
    ``queue.train_steps`` SGD steps on real batches (no augmentation).
``expansion: quadrants`` (IDM's partition-and-expansion, :mod:`reta.data.expansion`)
    each stored image is a 2 × 2 mosaic of half-resolution images, initialised from 4 real images; matching uses the
    4·IPC expanded images. The set is *stored as mosaics* with ``"expansion": "quadrants"`` in ``meta.json``;
    ``reta-evaluate`` expands on load, and the random baseline it reports has the same stored IPC.

IID (``method.iid``, [code: VincenDen/IID]) adds ``λ_CM · L_CM`` (channel covariance of the embedder's last feature
map, same real/synthetic batch) and ``κ · L_CC`` (spread of the synthetic images' features around their class mean,
from a frozen pretrained network drawn from a pool, :mod:`reta.synthesis.dm.pretrained_pool`, one per iteration).
With one synthetic training image per class both are inert: warned once, skipped, recorded in ``meta.json``.

Every method field may be overridden per IPC with ``by_ipc: {IPC: {field: value, …}}``: the entry with the largest
IPC ≤ the run's IPC is merged onto the method config (the published settings differ per IPC).

Resume: a plain checkpoint ``<output_dir>/checkpoints/last.ckpt`` (pixels, optimiser, iteration, RNG states, the IDM
queue) is written every ``checkpoint_every`` iterations; ``resume=true`` with the same ``paths.output_dir`` continues
from it and produces the same images as an uninterrupted run.

The validated config lives in :mod:`reta.synthesis.dm.config`, IDM's model queue in :mod:`reta.synthesis.dm.model_queue`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict

import torch
from torch import nn

from reta.data.dsa import DSA, DSAParams
from reta.data.expansion import expand_quadrants, factor, make_mosaics
from reta.data.registry import sample_per_class
from reta.errors import NonFiniteLossError, RetaError
from reta.models import build_model, features
from reta.synthesis.dm.config import DistributionSpec
from reta.synthesis.dm.losses import (
    INERT_MESSAGE,
    centralization_loss,
    class_aware_ce,
    covariance_matching_loss,
    iid_inert,
    mean_embedding_loss,
)
from reta.synthesis.dm.model_queue import ModelQueue, RealSampler
from reta.synthesis.dm.pretrained_pool import get_pool
from reta.synthesis.pixels import SyntheticImages
from reta.synthesis.registry import DistillContext, SynthesisResult, register_kind
from reta.training.common import seed_everything
from reta.utils.config import plain
from reta.utils.io import atomic_torch_save

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.ckpt"


# --------------------------------------------------------------------------------------------------- helpers


def _device(cfg) -> torch.device:
    acc = str(plain(cfg.get("trainer", {}) or {}).get("accelerator", "cpu"))
    if acc in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _rng_state(gen: torch.Generator) -> dict:
    st = {"gen": gen.get_state(), "torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(gen: torch.Generator, st: dict) -> None:
    gen.set_state(st["gen"])
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def fingerprint(cfg, spec: DistributionSpec) -> str:
    """Hash of everything a resumed run must share with the run that wrote the checkpoint."""
    ds = plain(cfg.dataset)
    keep = {"method": asdict(spec), "ipc": int(cfg.ipc), "seed": int(cfg.seed),
            "dataset": {k: ds.get(k) for k in ("name", "image_size", "channels", "mean", "std", "num_classes")}}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_finite(value: torch.Tensor, term: str, it: int) -> None:
    if not torch.isfinite(value):
        raise NonFiniteLossError(f"{term} became {value.item()} at iteration {it}")


# --------------------------------------------------------------------------------------------------- the loop


class DistributionMatcher:
    """State and step of one DM/IDM(+IID) synthesis run; :func:`distribution` drives it."""

    def __init__(self, spec: DistributionSpec, ds: Mapping, ipc: int, train, seed: int, device: torch.device,
                 pool: list[nn.Module] | None = None) -> None:
        self.spec, self.ds, self.ipc, self.device = spec, ds, int(ipc), device
        self.C = int(ds["num_classes"])
        self.f = factor(spec.expansion)
        self.gen = torch.Generator().manual_seed(int(seed) * 1000003 + 11)
        self.sampler = RealSampler(train, self.C, ds["mean"], ds["std"], self.gen, device)
        self.dsa = DSA(DSAParams(**dict(spec.dsa)))
        self.images = SyntheticImages(self._init_pixels(train, seed), self.C, self.ipc, ds["mean"], ds["std"]).to(device)
        self.opt = torch.optim.SGD([self.images.data], lr=spec.lr, momentum=spec.momentum)
        self.inert = iid_inert(self.ipc * self.f)
        self.use_cm = spec.iid.lambda_cm > 0 and not self.inert
        self.use_cc = spec.iid.kappa > 0 and not self.inert and bool(pool)
        self.pool = list(pool or [])
        for m in self.pool:
            m.to(device)
        self.queue = ModelQueue(spec.queue, self._new_embedder, self.sampler, self.gen) if spec.variant == "idm" else None
        self.iteration = 0
        self.history: list[dict] = []
        self.fingerprint = ""

    # ---- construction
    def _new_embedder(self) -> nn.Module:
        ds = self.ds
        return build_model(self.spec.embedder, self.C, ds["channels"], ds["image_size"]).to(self.device)

    def _init_pixels(self, train, seed: int) -> torch.Tensor:
        n = self.ipc * self.f
        c, s = int(self.ds["channels"]), int(self.ds["image_size"])
        if self.spec.init == "noise":
            g = torch.Generator().manual_seed(int(seed))
            z = torch.randn(self.C * self.ipc, c, s, s, generator=g)
            std = torch.tensor(self.ds["std"]).view(1, -1, 1, 1)
            mean = torch.tensor(self.ds["mean"]).view(1, -1, 1, 1)
            return z * std + mean  # randn in normalised space, as the reference
        smallest = min(len(g) for g in self.sampler.groups)
        if n > smallest:
            raise RetaError(f"init=real needs {n} real images per class (ipc {self.ipc} x expansion {self.f}); "
                            f"the smallest class has {smallest}")
        idx = sample_per_class(train.targets, self.C, n, int(seed))
        self.init_indices = idx.tolist()
        pixels = train.gather(idx)
        return make_mosaics(pixels) if self.f == 4 else pixels

    # ---- one class
    def _syn(self, c: int) -> torch.Tensor:
        x = self.images.data[c * self.ipc : (c + 1) * self.ipc]
        return expand_quadrants(x) if self.f == 4 else x

    def class_loss(self, c: int, net: nn.Module, pool_net: nn.Module | None, acc: float) -> tuple[torch.Tensor, dict]:
        spec = self.spec
        real = self.sampler.of_class(c, spec.batch_real)
        syn = self._syn(c)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.gen))
        real, syn = self.dsa.siamese(real, syn, seed=seed)
        with torch.no_grad():
            fr = net.forward_features(real)
        fs = net.forward_features(syn)
        loss = mean_embedding_loss(net.forward_head(fr, pre_logits=True), net.forward_head(fs, pre_logits=True))
        terms = {"match": loss.item()}
        if self.use_cm:
            cm = covariance_matching_loss(fr, fs)
            loss = loss + spec.iid.lambda_cm * cm
            terms["cm"] = cm.item()
        if self.use_cc and pool_net is not None:
            i = spec.iid
            cc = centralization_loss(features(pool_net, syn), i.cc_form, i.cc_alpha, i.cc_beta)
            loss = loss + i.kappa * cc
            terms["cc"] = cc.item()
        if spec.ce_weight > 0:
            ce = class_aware_ce(net.forward_head(fs), c, acc)
            loss = loss + spec.ce_weight * ce
            terms["ce"] = ce.item()
        return loss, terms

    # ---- one iteration
    def step(self) -> dict:
        spec, it = self.spec, self.iteration
        pool_net = self.pool[int(torch.randint(len(self.pool), (1,), generator=self.gen))] if self.use_cc else None
        totals: dict[str, float] = {}

        def add(terms: dict) -> None:
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + v

        if spec.variant == "dm":
            net = self._new_embedder().requires_grad_(False)
            self.opt.zero_grad(set_to_none=True)
            for c in range(self.C):
                loss, terms = self.class_loss(c, net, pool_net, 0.0)
                _check_finite(loss.detach(), f"DM loss (class {c})", it)
                loss.backward()
                add(terms)
            self.opt.step()
        else:
            q = self.queue
            if it % spec.queue.acc_window == 0 and it > 0:
                q.reset_meters()
            if it % spec.queue.push_every == 0:
                q.push()
            for qn in q.pick(spec.queue.nets_per_iteration):
                qn.net.eval().requires_grad_(False)
                for c in range(self.C):
                    self.opt.zero_grad(set_to_none=True)
                    loss, terms = self.class_loss(c, qn.net, pool_net, qn.acc_percent)
                    _check_finite(loss.detach(), f"IDM loss (class {c})", it)
                    loss.backward()
                    self.opt.step()
                    add(terms)
                qn.net.requires_grad_(True)
            q.train_some()
        self.iteration += 1
        return totals

    # ---- checkpoint
    def state_dict(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "iteration": self.iteration,
            "images": self.images.state_dict(),
            "opt": self.opt.state_dict(),
            "rng": _rng_state(self.gen),
            "queue": self.queue.state() if self.queue is not None else None,
            "history": self.history,
        }

    def load_state_dict(self, st: dict) -> None:
        if st.get("fingerprint") != self.fingerprint:
            raise RetaError("resume: the checkpoint was written by a different configuration (method, ipc, seed or "
                            "dataset changed); use another paths.output_dir or resume=false")
        self.iteration = int(st["iteration"])
        self.images.load_state_dict(st["images"])
        self.opt.load_state_dict(st["opt"])
        if self.queue is not None and st.get("queue") is not None:
            self.queue.load(st["queue"])
        self.history = list(st.get("history", []))
        _set_rng_state(self.gen, st["rng"])


def run_matching(matcher: DistributionMatcher, ckpt_path=None, progress: bool = False) -> float:
    """Iterate to ``spec.iterations`` (checkpointing as configured); returns seconds per iteration run here."""
    spec = matcher.spec
    start_it, t0 = matcher.iteration, time.perf_counter()
    window: dict[str, float] = {}
    n_window = 0
    while matcher.iteration < spec.iterations:
        terms = matcher.step()
        for k, v in terms.items():
            window[k] = window.get(k, 0.0) + v
        n_window += 1
        it = matcher.iteration
        if it % max(spec.log_every, 1) == 0 or it == spec.iterations:
            row = {"iteration": it, **{k: round(v / n_window, 6) for k, v in window.items()}}
            matcher.history.append(row)
            msg = f"{spec.name} it {it}/{spec.iterations} " + " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "iteration")
            log.info(msg)
            if progress:
                print(msg, flush=True)
            window, n_window = {}, 0
        if ckpt_path is not None and spec.checkpoint_every > 0 and it % spec.checkpoint_every == 0 and it < spec.iterations:
            atomic_torch_save(matcher.state_dict(), ckpt_path)
    done = matcher.iteration - start_it
    return (time.perf_counter() - t0) / done if done else float("nan")


@register_kind("distribution")
def distribution(cfg, ctx: DistillContext) -> SynthesisResult:
    ipc = int(cfg.ipc)
    spec = DistributionSpec.from_cfg(cfg.method, ipc)
    ds = plain(cfg.dataset)
    seed = int(cfg.seed)
    device = _device(cfg)
    inert = iid_inert(ipc * factor(spec.expansion))
    wants_iid = spec.iid.lambda_cm > 0 or spec.iid.kappa > 0
    if wants_iid and inert:
        warnings.warn(INERT_MESSAGE, RuntimeWarning, stacklevel=2)
        log.warning(INERT_MESSAGE)
    pool, pool_meta = [], []
    if spec.iid.kappa > 0 and not inert:
        with ctx.teacher_timing():  # a pool squeezed on first use is teacher time, not synthesis
            # pool members are teachers: trained on the whole training split even under a held-out split
            pool, pool_meta = get_pool(cfg, spec.iid.pool, getattr(ctx.train, "base", ctx.train), ctx.test)
    seed_everything(seed)  # after the pool (its training reseeds): embedder inits come from this stream
    matcher = DistributionMatcher(spec, ds, ipc, ctx.train, seed, device, pool)
    matcher.fingerprint = fingerprint(cfg, spec)
    ckpt = ctx.ckpt_dir / CHECKPOINT_NAME
    resumed_from = None
    if bool(cfg.get("resume", False)) and ckpt.is_file():
        try:
            state = torch.load(ckpt, map_location=device, weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises several types for corrupt or non-tensor files
            raise RetaError(f"resume: cannot read {ckpt} ({str(err).splitlines()[0]}); use resume=false") from err
        matcher.load_state_dict(state)
        resumed_from = matcher.iteration
        log.info("resumed %s from %s at iteration %d", spec.name, ckpt, matcher.iteration)
    else:
        if cfg.get("resume", False):
            log.warning("resume=true but %s does not exist: starting from scratch", ckpt)
        ckpt.unlink(missing_ok=True)
    ctx.ckpt_dir.mkdir(parents=True, exist_ok=True)
    sec_per_it = run_matching(matcher, ckpt, progress=bool(cfg.get("progress_bar", False)))
    if ckpt.is_file():
        ckpt.unlink()  # finished: the distilled set is the artifact
    meta = {
        "expansion": spec.expansion,
        "variant": spec.variant,
        "iterations": spec.iterations,
        "seconds_per_iteration": round(sec_per_it, 4) if math.isfinite(sec_per_it) else None,
        "device": str(device),
        "iid": {
            "lambda_cm": spec.iid.lambda_cm,
            "kappa": spec.iid.kappa,
            "inert": bool(wants_iid and inert),
            "cm_active": matcher.use_cm,
            "cc_active": matcher.use_cc,
            "pool": pool_meta,
        },
        "loss_history": matcher.history,
        "resumed_from_iteration": resumed_from,
    }
    if spec.init == "real":
        meta["init_indices"] = matcher.init_indices
    return SynthesisResult(matcher.images.pixels().cpu(), matcher.images.labels, meta)

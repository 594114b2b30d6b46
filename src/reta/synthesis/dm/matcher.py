"""One DM/IDM(+IID) synthesis run as a plain state + step object: :class:`DistributionMatcher`.

The algorithms are described in :mod:`reta.synthesis.dm.family`; the Lightning loop that drives the matcher
(precision, devices, loggers, progress bar, resume checkpoints) is :mod:`reta.synthesis.matcher_module`. The matcher
does the maths of one iteration; how a loss is backpropagated and how the optimiser steps are injected (``backward``,
``optimizer_step``), so that under Lightning they go through the precision plugin (``manual_backward``,
``LightningOptimizer.step``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from reta.data.dsa import DSA, DSAParams
from reta.data.expansion import expand_quadrants, factor
from reta.errors import NonFiniteLossError
from reta.models import build_model, features
from reta.synthesis.dm.config import DistributionSpec
from reta.synthesis.dm.losses import (
    centralization_loss,
    class_aware_ce,
    covariance_matching_loss,
    iid_inert,
    mean_embedding_loss,
)
from reta.synthesis.dm.model_queue import ModelQueue
from reta.synthesis.matcher_state import MatcherState, init_pixels
from reta.synthesis.pixels import SyntheticImages
from reta.synthesis.real_sampler import RealSampler


def _check_finite(value: torch.Tensor, term: str, it: int) -> None:
    if not torch.isfinite(value):
        raise NonFiniteLossError(f"{term} became {value.item()} at iteration {it}")


# --------------------------------------------------------------------------------------------------- the loop


class DistributionMatcher(MatcherState):
    """State and step of one DM/IDM(+IID) synthesis run; :func:`distribution` drives it."""

    def __init__(self, spec: DistributionSpec, ds: Mapping, ipc: int, train, seed: int, device: torch.device,
                 pool: list[nn.Module] | None = None) -> None:
        self._start(spec, ds, ipc, seed, device, stream=11)
        self.f = factor(spec.expansion)
        self.sampler = RealSampler(train, self.C, ds["mean"], ds["std"], self.gen, device)
        self.dsa = DSA(DSAParams(**dict(spec.dsa)))
        self.images = SyntheticImages(
            self._init_pixels(train, seed), self.C, self.ipc, ds["mean"], ds["std"]
        ).to(device)
        self.opt = torch.optim.SGD([self.images.data], lr=spec.lr, momentum=spec.momentum)
        self.inert = iid_inert(self.ipc * self.f)
        self.use_cm = spec.iid.lambda_cm > 0 and not self.inert
        self.use_cc = spec.iid.kappa > 0 and not self.inert and bool(pool)
        self.pool = list(pool or [])
        for m in self.pool:
            m.to(device)
        self.queue = (
            ModelQueue(spec.queue, self._new_embedder, self.sampler, self.gen) if spec.variant == "idm" else None
        )

    # ---- construction
    def _new_embedder(self) -> nn.Module:
        ds = self.ds
        return build_model(self.spec.embedder, self.C, ds["channels"], ds["image_size"]).to(self.device)

    def _init_pixels(self, train, seed: int) -> torch.Tensor:
        pixels, self.init_indices = init_pixels(self.spec.init, self.ds, self.ipc, self.f, train, self.sampler.groups,
                                                seed)
        return pixels

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
        self.on_features(fs)
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
                self.backward(loss)
                add(terms)
            self.optimizer_step()
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
                    self.backward(loss)
                    self.optimizer_step()
                    add(terms)
                qn.net.requires_grad_(True)
            q.train_some()
        self.iteration += 1
        return totals

    # ---- checkpoint (the common part: MatcherState)
    def state_dict(self) -> dict:
        return {**super().state_dict(), "queue": self.queue.state() if self.queue is not None else None}

    def load_extra(self, st: dict) -> None:
        if self.queue is not None and st.get("queue") is not None:
            self.queue.load(st["queue"])

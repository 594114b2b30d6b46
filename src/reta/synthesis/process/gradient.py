"""One DC/DSA synthesis run as a plain state + step object: :class:`GradientMatcher`.

DC [paper: Zhao, Mopuri & Bilen, ICLR 2021, arXiv 2006.05929, Alg. 1; code: VICO-UoE/DatasetCondensation ``main.py``]
and DSA [paper: Zhao & Bilen, ICML 2021, arXiv 2102.08259, Eq. 4]. One iteration:

1. a freshly initialised network θ (from torch's global stream) and its SGD (``lr_net``, no momentum);
2. ``outer_loop`` times: for every class c, ``D(∇θ CE(θ; A(real_c)), ∇θ CE(θ; A(S_c)))`` with ``batch_real`` random real
   images of c, the real gradient a constant, the synthetic one differentiable (``create_graph``); D is
   :func:`reta.synthesis.process.distance.match_distance`; the class terms are summed into ONE image step (SGD
   ``lr_img``, momentum, optimiser kept for the whole run). For DSA, A is one augmentation drawn per class and applied
   to both batches (:meth:`reta.data.dsa.DSA.draw` with ``shared=True``, from the run's generator); for DC, A = id;
3. between outer steps (not after the last), ``inner_loop`` epochs of the network on the current synthetic set
   (shuffled batches of ``batch_train``, CE; per-image DSA for DSA).

Class terms are back-propagated one at a time into the images (the gradient of the sum, a class-sized graph at a
time). The Lightning loop, resume and precision are shared with the DM family
(:class:`reta.synthesis.matcher_module.MatcherModule`, :mod:`reta.synthesis.matcher_run`), with ``backward`` /
``optimizer_step`` injected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from reta.data.dsa import DSA, DSAParams, DSASample
from reta.errors import NonFiniteLossError
from reta.models import build_model
from reta.synthesis.matcher_state import MatcherState, init_pixels
from reta.synthesis.pixels import SyntheticImages
from reta.synthesis.process.config import GradientSpec
from reta.synthesis.process.distance import match_distance
from reta.synthesis.real_sampler import RealSampler


class GradientMatcher(MatcherState):
    """State and step of one DC/DSA run (see the module docstring)."""

    log_prefix = "dc"

    def __init__(self, spec: GradientSpec, ds: Mapping, ipc: int, train, seed: int, device: torch.device) -> None:
        self._start(spec, ds, ipc, seed, device, stream=17)
        self.sampler = RealSampler(train, self.C, ds["mean"], ds["std"], self.gen, device)
        self.dsa = DSA(DSAParams(**dict(spec.dsa)))
        pixels, self.init_indices = init_pixels(spec.init, ds, self.ipc, 1, train, self.sampler.groups, seed)
        self.images = SyntheticImages(pixels, self.C, self.ipc, ds["mean"], ds["std"]).to(device)
        self.opt = torch.optim.SGD([self.images.data], lr=spec.lr_img, momentum=spec.momentum)
        #: called with (class, real, synthetic, sample) for every matched class (tests, diagnostics)
        self.on_pair: Callable[[int, torch.Tensor, torch.Tensor, DSASample | None], None] = lambda *a: None

    def new_net(self) -> nn.Module:
        ds = self.ds
        return build_model(self.spec.net, self.C, ds["channels"], ds["image_size"]).to(self.device)

    # ---- one class
    def pair(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (augmented) real batch and synthetic images of class ``c``; DSA: one draw shared by both."""
        real = self.sampler.of_class(c, self.spec.batch_real)
        syn = self.images.data[c * self.ipc : (c + 1) * self.ipc]
        sample = None
        if self.spec.siamese:
            sample = self.dsa.draw(1, self.gen, shared=True)
            real, syn = self.dsa.apply(real, sample), self.dsa.apply(syn, sample)
        self.on_pair(c, real, syn, sample)
        return real, syn

    def class_loss(self, c: int, net: nn.Module, params: list[torch.Tensor]) -> torch.Tensor:
        real, syn = self.pair(c)
        y_real = torch.full((real.shape[0],), c, dtype=torch.long, device=real.device)
        y_syn = torch.full((syn.shape[0],), c, dtype=torch.long, device=syn.device)
        g_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real), y_real), params)]
        out = net(syn)
        self.on_features(out)
        g_syn = torch.autograd.grad(F.cross_entropy(out, y_syn), params, create_graph=True)
        return match_distance(g_real, g_syn, self.spec.distance)

    # ---- the network between image steps
    def train_net(self, net: nn.Module, opt: torch.optim.Optimizer) -> None:
        spec = self.spec
        x_all, y_all = self.images.data.detach().clone(), self.images.labels.to(self.device)
        n = x_all.shape[0]
        for _ in range(spec.inner_loop):
            perm = torch.randperm(n, generator=self.gen).to(self.device)
            for b in range(0, n, spec.batch_train):
                idx = perm[b : b + spec.batch_train]
                x = x_all[idx]
                if spec.inner_dsa:
                    x = self.dsa(x, self.gen)
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(x), y_all[idx]).backward()
                opt.step()

    # ---- one iteration
    def step(self) -> dict:
        spec, it = self.spec, self.iteration
        net = self.new_net().train()
        params = list(net.parameters())
        net_opt = torch.optim.SGD(params, lr=spec.lr_net)
        total = 0.0
        for ol in range(spec.outer_loop):
            self.opt.zero_grad(set_to_none=True)
            for c in range(self.C):
                loss = self.class_loss(c, net, params)
                if not torch.isfinite(loss.detach()):
                    raise NonFiniteLossError(f"{spec.name} matching loss (class {c}) became {loss.item()} at "
                                             f"iteration {it}")
                self.backward(loss, inputs=[self.images.data])
                total += loss.item()
            self.optimizer_step()
            if ol == spec.outer_loop - 1:
                break
            self.train_net(net, net_opt)
        self.iteration += 1
        return {"match": total / spec.outer_loop}

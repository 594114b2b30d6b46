"""One MTT synthesis run as a plain state + step object: :class:`TrajectoryMatcher`.

[paper: Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022, arXiv 2203.11932,
Eq. 1–2 and Alg. 1; code: GeorgeCazenavette/mtt-distillation ``distill.py``]. One iteration:

1. draw an expert e and a start epoch t ∈ [0, max_start_epoch); θ̂₀ = θ*_{e,t}, target θ*_{e,t+M} (M = expert_epochs);
2. unroll a student for N = ``syn_steps`` differentiable SGD steps on synthetic minibatches (``batch_syn`` images
   from a shuffled permutation, a new permutation when it is used up; per-image DSA):
   ``θ̂_{n+1} = θ̂_n − α ∇_θ CE(f(A(x_n); θ̂_n), y_n)`` with ``create_graph`` and the learnable synthetic lr α;
3. ``L = ‖θ̂_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖²``, back-propagated through the whole unroll into the images and α;
   one SGD step (momentum 0.5) of each (``lr_img``, ``lr_lr``; one optimiser, two parameter groups).

The student is a functional network: ``torch.func.functional_call(net, unflatten(θ), (x,))`` over one flat parameter
vector in ``net.parameters()`` order — the order of the expert buffer, whose names and shapes are checked at start.
The learnt α is recorded in ``meta.json`` (``syn_lr``; the reference also evaluates with it).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from reta.data.dsa import DSA, DSAParams
from reta.errors import NonFiniteLossError, RetaError
from reta.models import build_model
from reta.synthesis.matcher_state import MatcherState, init_pixels
from reta.synthesis.pixels import SyntheticImages
from reta.synthesis.process.config import TrajectorySpec
from reta.synthesis.real_sampler import RealSampler
from reta.training.experts import ExpertBuffer, param_layout


class FlatNet:
    """``net`` as a function of one flat parameter vector (``net.parameters()`` order)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.names, shapes = param_layout(net)
        self.shapes = [torch.Size(s) for s in shapes]
        self.numels = [s.numel() for s in self.shapes]
        self.buffers = dict(net.named_buffers())

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(theta, self.numels)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes)}

    def __call__(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.net, {**self.unflatten(theta), **self.buffers}, (x,))


class TrajectoryMatcher(MatcherState):
    """State and step of one MTT run (see the module docstring)."""

    log_prefix = "mtt"
    fingerprint_covers = "method, ipc, seed, dataset or expert buffer"

    def __init__(self, spec: TrajectorySpec, ds: Mapping, ipc: int, train, seed: int, device: torch.device,
                 experts: ExpertBuffer) -> None:
        self._start(spec, ds, ipc, seed, device, stream=23)
        self.experts = experts
        need = spec.max_start_epoch - 1 + spec.expert_epochs
        have = int(experts.meta["snapshots"]) - 1
        if need > have:
            raise RetaError(f"MTT needs expert trajectories of >= {need} epochs (max_start_epoch - 1 + expert_epochs); "
                            f"the buffer {experts.entry.name} has {have}")
        net = build_model(spec.net, self.C, ds["channels"], ds["image_size"]).to(device)
        self.student = FlatNet(net)
        if self.student.names != list(experts.meta["param_names"]) or [list(s) for s in self.student.shapes] != [
                list(s) for s in experts.meta["param_shapes"]]:
            raise RetaError(f"MTT: method.net does not have the parameter layout of the expert buffer "
                            f"{experts.entry.name}")
        sampler = RealSampler(train, self.C, ds["mean"], ds["std"], self.gen, device)
        pixels, self.init_indices = init_pixels(spec.init, ds, self.ipc, 1, train, sampler.groups, seed)
        self.images = SyntheticImages(pixels, self.C, self.ipc, ds["mean"], ds["std"]).to(device)
        self.syn_lr = nn.Parameter(torch.tensor(float(spec.lr_teacher), device=device))
        self.opt = torch.optim.SGD([{"params": [self.images.data], "lr": spec.lr_img},
                                    {"params": [self.syn_lr], "lr": spec.lr_lr}], momentum=spec.momentum)
        self.dsa = DSA(DSAParams(**dict(spec.dsa)))
        self._order: list[torch.Tensor] = []

    # ---- the unroll
    def next_batch(self) -> torch.Tensor:
        """Indices of the next synthetic minibatch (``batch_syn``; 0 = all), popped from shuffled permutations."""
        n = self.images.data.shape[0]
        b = self.spec.batch_syn or n
        if not self._order:
            self._order = list(torch.randperm(n, generator=self.gen).split(b))
        return self._order.pop(0)

    def unroll(self, theta0: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps`` differentiable SGD steps with the synthetic lr from ``theta0`` (graph kept to images and α)."""
        labels = self.images.labels.to(self.device)
        theta = theta0
        for _ in range(steps):
            idx = self.next_batch().to(self.device)
            x = self.images.data[idx]
            if self.dsa.params.ops:
                x = self.dsa(x, self.gen)
            out = self.student(theta, x)
            self.on_features(out)
            g = torch.autograd.grad(F.cross_entropy(out, labels[idx]), theta, create_graph=True)[0]
            theta = theta - self.syn_lr * g
        return theta

    # ---- one iteration
    def step(self) -> dict:
        spec = self.spec
        e = int(torch.randint(len(self.experts.trajectories), (1,), generator=self.gen))
        t = int(torch.randint(spec.max_start_epoch, (1,), generator=self.gen))
        traj = self.experts.trajectories[e]
        start = traj[t].to(self.device)
        target = traj[t + spec.expert_epochs].to(self.device)
        theta0 = start.clone().requires_grad_(True)
        theta = self.unroll(theta0, spec.syn_steps)
        loss = ((theta - target) ** 2).sum() / ((start - target) ** 2).sum()
        if not torch.isfinite(loss.detach()):
            raise NonFiniteLossError(f"MTT loss became {loss.item()} at iteration {self.iteration}")
        self.opt.zero_grad(set_to_none=True)
        self.backward(loss, inputs=[self.images.data, self.syn_lr])
        self.optimizer_step()
        self.iteration += 1
        return {"match": loss.item(), "syn_lr": float(self.syn_lr.detach())}

    # ---- checkpoint (the common part: MatcherState)
    def state_dict(self) -> dict:
        return {**super().state_dict(), "syn_lr": self.syn_lr.detach().clone(),
                "order": [o.clone() for o in self._order]}

    def load_extra(self, st: dict) -> None:
        with torch.no_grad():
            self.syn_lr.copy_(st["syn_lr"])
        self._order = list(st.get("order", []))

"""IDM's queue of partially trained embedders (docs/methods.md §6.2) and the real-image sampler shared by the DM loop
(real batches per class) and the queue (mixed-class training batches).

[code: uitrbn/IDM ``IDM_cifar10.py``: ``net_num``, ``net_generate_interval``, ``fetch_net_num``,
``model_train_steps``, ``trained_bs``] — nets enter the queue freshly initialised, the oldest leaves when it is full;
after each image update a few random queue nets take SGD steps on real batches and keep a running training accuracy
(the class-aware CE weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reta.synthesis.dm.config import QueueSpec
from reta.synthesis.real_sampler import RealSampler


@dataclass
class QueuedNet:
    net: nn.Module
    opt: torch.optim.Optimizer
    correct: int = 0
    seen: int = 0

    @property
    def acc_percent(self) -> float:
        return 100.0 * self.correct / self.seen if self.seen else 0.0


class ModelQueue:
    """IDM's queue of partially trained embedders."""

    def __init__(self, spec: QueueSpec, make_net, sampler: RealSampler, gen: torch.Generator) -> None:
        self.spec, self.make_net, self.sampler, self.gen = spec, make_net, sampler, gen
        self.nets: list[QueuedNet] = []
        for _ in range(spec.initial):
            self.push()

    def _new(self) -> QueuedNet:
        net = self.make_net().train()
        s = self.spec
        opt = torch.optim.SGD(net.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        return QueuedNet(net, opt)

    def push(self) -> None:
        if len(self.nets) >= self.spec.capacity:
            self.nets.pop(0)
        self.nets.append(self._new())

    def pick(self, k: int) -> list[QueuedNet]:
        order = torch.randperm(len(self.nets), generator=self.gen)[: min(k, len(self.nets))]
        return [self.nets[int(i)] for i in order]

    def train_some(self) -> None:
        s = self.spec
        for q in self.pick(s.train_nets):
            q.net.train().requires_grad_(True)
            for _ in range(s.train_steps):
                x, y = self.sampler.any(s.batch)
                logits = q.net(x)
                loss = F.cross_entropy(logits, y)
                q.opt.zero_grad(set_to_none=True)
                loss.backward()
                q.opt.step()
                q.correct += int((logits.detach().argmax(1) == y).sum())
                q.seen += int(y.numel())

    def reset_meters(self) -> None:
        for q in self.nets:
            q.correct = q.seen = 0

    def state(self) -> list[dict]:
        return [
            {"net": q.net.state_dict(), "opt": q.opt.state_dict(), "correct": q.correct, "seen": q.seen}
            for q in self.nets
        ]

    def load(self, states: list[dict]) -> None:
        self.nets = []
        for st in states:
            q = self._new()
            q.net.load_state_dict(st["net"])
            q.opt.load_state_dict(st["opt"])
            q.correct, q.seen = int(st["correct"]), int(st["seen"])
            self.nets.append(q)

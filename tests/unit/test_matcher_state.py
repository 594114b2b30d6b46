"""MatcherState, the base of the DM, DC/DSA and MTT matchers: a checkpoint round trip restores the run (images,
optimiser, iteration, history, RNG streams, a subclass's extra state), the RNG states are restored after the extra
state, and a checkpoint with another fingerprint is refused before anything is restored."""

from __future__ import annotations

import pytest
import torch

from reta.errors import RetaError
from reta.synthesis.matcher_state import MatcherState
from reta.synthesis.pixels import SyntheticImages

DS = {"num_classes": 2, "channels": 1, "image_size": 4, "mean": [0.5], "std": [0.25]}


class Toy(MatcherState):
    """Two classes, one 4x4 image each; one SGD step on the pixels per iteration; an extra counter."""

    fingerprint_covers = "toy settings"

    def __init__(self, seed: int) -> None:
        self._start(None, DS, 1, seed, torch.device("cpu"), stream=5)
        self.images = SyntheticImages(torch.rand(2, 1, 4, 4, generator=self.gen), 2, 1, DS["mean"], DS["std"])
        self.opt = torch.optim.SGD([self.images.data], lr=0.1, momentum=0.9)
        self.extra = 0

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        noise = torch.randn(self.images.data.shape, generator=self.gen) + torch.randn(())  # both streams
        self.backward((self.images.data * noise).sum())
        self.optimizer_step()
        self.extra += 1
        self.iteration += 1
        self.history.append({"iteration": self.iteration})

    def state_dict(self) -> dict:
        return {**super().state_dict(), "extra": self.extra}

    def load_extra(self, st: dict) -> None:
        self.extra = int(st["extra"])
        torch.randn(3)  # rebuilding extra state may draw from torch's global stream (IDM's model queue does)


def test_checkpoint_round_trip_continues_like_an_uninterrupted_run():
    torch.manual_seed(0)
    straight = Toy(seed=1)
    for _ in range(4):
        straight.step()

    torch.manual_seed(0)
    first = Toy(seed=1)
    first.fingerprint = "abc"
    first.step(), first.step()
    st = first.state_dict()
    torch.randn(7)  # the global stream moves on between the kill and the resume
    second = Toy(seed=1)
    second.fingerprint = "abc"
    second.load_state_dict(st)
    assert second.iteration == 2 and second.extra == 2 and second.history == first.history
    second.step(), second.step()
    assert torch.equal(second.images.data, straight.images.data)
    assert second.history == straight.history


def test_another_fingerprint_is_refused_before_anything_is_restored():
    a = Toy(seed=1)
    a.fingerprint = "abc"
    a.step()
    b = Toy(seed=2)
    b.fingerprint = "xyz"
    before = b.images.data.detach().clone()
    with pytest.raises(RetaError, match=r"different configuration \(toy settings changed, or an earlier reta wrote "
                                        r"it\); pass overwrite=true"):
        b.load_state_dict(a.state_dict())
    assert b.iteration == 0 and b.extra == 0 and torch.equal(b.images.data, before)

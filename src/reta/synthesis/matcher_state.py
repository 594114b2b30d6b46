"""Pieces of a matcher's state shared by the DM and process-matching families: the base class of the matchers
(:class:`MatcherState`: common attributes, injected hooks, checkpoint state), the RNG states a resume restores, the
fingerprint a resumed run must share with the run that wrote the checkpoint, and the initial pixels."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict

import torch

from reta.data.expansion import make_mosaics
from reta.data.registry import dataset_identity, sample_per_class
from reta.errors import RetaError
from reta.synthesis.runtime import optimisation_fields
from reta.utils.config import config_digest, plain


def rng_state(gen: torch.Generator) -> dict:
    st = {"gen": gen.get_state(), "torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(gen: torch.Generator, st: dict) -> None:
    gen.set_state(st["gen"])
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def fingerprint(cfg, spec) -> str:
    """Hash of everything a resumed run must share with the run that wrote the checkpoint."""
    ds = plain(cfg.dataset)
    method = optimisation_fields(asdict(spec))  # a resume may change the logging, checkpoint cadence and clamp
    keep = {"method": method, "ipc": int(cfg.ipc), "seed": int(cfg.seed),
            "dataset": dataset_identity(ds)}
    return config_digest(keep)


def init_pixels(init: str, ds: Mapping, ipc: int, f: int, train, groups, seed: int
                ) -> tuple[torch.Tensor, list[int] | None]:
    """Initial pixels ``[C·IPC, ch, H, W]`` (and the real images' indices): ``noise`` = randn in normalised space
    (as the DC/DM reference), ``real`` = ``IPC·f`` random real images per class (as mosaics when ``f == 4``)."""
    C, n = int(ds["num_classes"]), ipc * f
    c, s = int(ds["channels"]), int(ds["image_size"])
    if init == "noise":
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn(C * ipc, c, s, s, generator=g)
        std = torch.tensor(ds["std"]).view(1, -1, 1, 1)
        mean = torch.tensor(ds["mean"]).view(1, -1, 1, 1)
        return z * std + mean, None
    smallest = min(len(g) for g in groups)
    if n > smallest:
        raise RetaError(f"init=real needs {n} real images per class (ipc {ipc} x expansion {f}); "
                        f"the smallest class has {smallest}")
    idx = sample_per_class(train.targets, C, n, int(seed))
    pixels = train.gather(idx)
    return (make_mosaics(pixels) if f == 4 else pixels), idx.tolist()


class MatcherState:
    """What every matcher (DM/IDM, DC/DSA, MTT) shares: run attributes, the iteration counter, the loss history, the
    resume fingerprint, the injected hooks and the checkpoint state.

    A subclass calls :meth:`_start` first, then sets ``images`` (:class:`reta.synthesis.pixels.SyntheticImages`) and
    ``opt``. ``backward``, ``optimizer_step`` and ``on_features`` are defaults that
    :class:`reta.synthesis.matcher_module.MatcherModule` replaces per instance (``manual_backward``,
    ``LightningOptimizer.step``, the feature-dtype probe). A subclass with more checkpoint state extends
    :meth:`state_dict` and restores it in :meth:`load_extra`.
    """

    #: what a checkpoint with another fingerprint may come from (the resume error names it)
    fingerprint_covers = "method, ipc, seed or dataset"

    def _start(self, spec, ds: Mapping, ipc: int, seed: int, device: torch.device, stream: int) -> None:
        """Common attributes; the run's generator is seeded with ``seed · 1000003 + stream`` (one stream per kind)."""
        self.spec, self.ds, self.ipc, self.device = spec, ds, int(ipc), device
        self.C = int(ds["num_classes"])
        self.gen = torch.Generator().manual_seed(int(seed) * 1000003 + stream)
        self.iteration = 0
        self.history: list[dict] = []
        self.fingerprint = ""

    # ---- injected hooks (defaults)
    def backward(self, loss: torch.Tensor, **kw) -> None:
        loss.backward(**kw)

    def optimizer_step(self) -> None:
        self.opt.step()

    def on_features(self, feats: torch.Tensor) -> None:
        pass

    # ---- checkpoint
    def state_dict(self) -> dict:
        return {"fingerprint": self.fingerprint, "iteration": self.iteration, "images": self.images.state_dict(),
                "opt": self.opt.state_dict(), "rng": rng_state(self.gen), "history": self.history}

    def load_state_dict(self, st: dict) -> None:
        if st.get("fingerprint") != self.fingerprint:
            raise RetaError(f"resume: the checkpoint was written by a different configuration "
                            f"({self.fingerprint_covers} changed, or an earlier reta wrote it); pass overwrite=true "
                            "to start again, or another paths.output_dir")
        self.iteration = int(st["iteration"])
        self.images.load_state_dict(st["images"])
        self.opt.load_state_dict(st["opt"])
        self.load_extra(st)
        self.history = list(st.get("history", []))
        set_rng_state(self.gen, st["rng"])  # last: restoring the extra state may draw from torch's global stream

    def load_extra(self, st: dict) -> None:
        """Restore what a subclass adds to :meth:`state_dict` (called before the RNG states are restored)."""

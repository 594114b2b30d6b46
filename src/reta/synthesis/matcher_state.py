"""Pieces of a matcher's state shared by the DM and process-matching families: the RNG states a resume restores, the
fingerprint a resumed run must share with the run that wrote the checkpoint, and the initial pixels."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict

import torch

from reta.data.expansion import make_mosaics
from reta.data.registry import sample_per_class
from reta.errors import RetaError
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
    keep = {"method": asdict(spec), "ipc": int(cfg.ipc), "seed": int(cfg.seed),
            "dataset": {k: ds.get(k) for k in ("name", "image_size", "channels", "mean", "std", "num_classes")}}
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

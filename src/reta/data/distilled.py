"""Distilled-set format, version 1 (docs/architecture.md, "Contracts"): writer and validating reader.

A distilled set is a directory::

    images.pt        float32 [N, C, H, W], pixels in [0, 1] (not normalized), ordered by class; with
                     ``meta["clamped"] = false`` any finite pixel values (the optimised images as they are: the
                     DC/DSA/MTT references evaluate their sets unclamped); the PNGs show them clamped
    labels.pt        int64 [N], hard labels, non-decreasing, exactly ``ipc`` per class
    soft_labels.pt   optional float32 [N, K]
    meta.json        format_version, dataset, num_classes, ipc, image_shape, mean, std, class_names,
                     method, seed, package_version, plus whatever the caller adds (method
                     hyperparameters, teacher name / checkpoint hash / test accuracy, config hash, …)
    grid.png         one row per class, ``ipc`` columns (downscaled when it would exceed ~16.7 Mpx)
    png/<class_index>_<class_name>/<k>.png    the same images as an ImageFolder tree

``<class_index>`` is zero-padded to the width of ``num_classes - 1`` (``007_horse``) so that
torchvision ``ImageFolder``, which sorts folder names as strings, recovers the original class order.

:func:`save_distilled` writes everything into a temporary sibling directory and renames it into place,
so ``out_dir`` is either absent, the previous complete set, or the new complete set.
:func:`load_distilled` is the only reader and checks every invariant above.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reta.errors import RetaError, load_failure
from reta.utils.config import plain
from reta.utils.io import atomic_directory, atomic_write_json

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
CALLER_KEYS = ("dataset", "num_classes", "ipc", "mean", "std", "method", "seed")
REQUIRED_KEYS = ("format_version", *CALLER_KEYS, "image_shape", "class_names")
GRID_MAX_PIXELS = 4096 * 4096
GRID_PADDING = 2


@dataclass
class DistilledSet:
    """A validated distilled set as read by :func:`load_distilled`."""

    images: torch.Tensor
    labels: torch.Tensor
    soft_labels: torch.Tensor | None
    meta: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def ipc(self) -> int:
        return int(self.meta["ipc"])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def mean(self) -> list[float]:
        return [float(x) for x in self.meta["mean"]]

    @property
    def std(self) -> list[float]:
        return [float(x) for x in self.meta["std"]]

    def __len__(self) -> int:
        return int(self.labels.numel())


def _plain(meta: Any) -> dict[str, Any]:
    meta = plain(meta)
    if not isinstance(meta, Mapping):
        raise RetaError(f"meta must be a mapping, got {type(meta).__name__}")
    return dict(meta)


def sanitize_name(name: str, max_len: int = 64) -> str:
    """A class name as a portable directory name: ASCII word characters, '.', '-'; never empty or hidden."""
    s = re.sub(r"[^\w.-]+", "_", str(name), flags=re.ASCII).strip("._")
    return s[:max_len] or "class"


def class_dir_names(class_names: Sequence[str]) -> list[str]:
    width = len(str(max(len(class_names) - 1, 0)))
    return [f"{i:0{width}d}_{sanitize_name(n)}" for i, n in enumerate(class_names)]


# ------------------------------------------------------------------------------------------- validation


def validate(images: Any, labels: Any, soft_labels: Any, meta: Mapping[str, Any]) -> None:
    """Check every format-v1 invariant; each violation is a :class:`RetaError` naming the file."""
    version = meta.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise RetaError(
            f"meta.json: format_version {version!r} is not supported (this reta reads {SUPPORTED_VERSIONS})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise RetaError(f"meta.json: missing key(s) {', '.join(missing)}")
    for key in ("num_classes", "ipc"):  # 1.5 or true must not pass as 1
        if isinstance(meta[key], bool) or not isinstance(meta[key], int):
            raise RetaError(f"meta.json: num_classes and ipc must be integers ({key} is {meta[key]!r})")
    k, ipc = meta["num_classes"], meta["ipc"]
    if k <= 0 or ipc <= 0:
        raise RetaError(f"meta.json: num_classes ({k}) and ipc ({ipc}) must be positive")
    names = meta["class_names"]
    if not isinstance(names, (list, tuple)) or len(names) != k:
        raise RetaError(f"meta.json: class_names must be a list of num_classes={k} names")

    if not isinstance(images, torch.Tensor):
        raise RetaError(f"images.pt: expected a tensor, got {type(images).__name__}")
    if images.dtype != torch.float32 or images.ndim != 4:
        raise RetaError(f"images.pt: expected float32 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
    shape = (
        list(meta["image_shape"]) if isinstance(meta["image_shape"], (list, tuple)) else meta["image_shape"]
    )
    if shape != list(images.shape[1:]):
        raise RetaError(
            f"images.pt: image shape {list(images.shape[1:])} does not match meta.json image_shape {shape}"
        )
    for key in ("mean", "std"):
        if not isinstance(meta[key], (list, tuple)) or len(meta[key]) != images.shape[1]:
            raise RetaError(f"meta.json: {key} must have one value per channel ({images.shape[1]})")
    if images.numel():
        if not bool(torch.isfinite(images).all()):
            raise RetaError("images.pt: contains NaN or inf")
        lo, hi = float(images.min()), float(images.max())
        if meta.get("clamped", True) is not False and (lo < 0.0 or hi > 1.0):
            raise RetaError(
                f"images.pt: pixel values span [{lo:.4g}, {hi:.4g}], outside [0, 1] (clamp before saving, or record "
                "meta.json clamped: false for a set whose images are meant unclamped)"
            )

    if not isinstance(labels, torch.Tensor):
        raise RetaError(f"labels.pt: expected a tensor, got {type(labels).__name__}")
    if labels.dtype != torch.int64 or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise RetaError(
            f"labels.pt: expected int64 [{images.shape[0]}], got {labels.dtype} {tuple(labels.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise RetaError(
            f"labels.pt: labels span [{int(labels.min())}, {int(labels.max())}], outside num_classes={k}"
        )
    if labels.numel() > 1 and not bool((labels[1:] >= labels[:-1]).all()):
        raise RetaError("labels.pt: not ordered by class (all of class 0, then class 1, …)")
    counts = torch.bincount(labels, minlength=k)
    bad = (counts != ipc).nonzero().flatten().tolist()
    if bad:
        c = bad[0]
        raise RetaError(
            f"labels.pt: class {c} has {int(counts[c])} images but meta.json ipc={ipc} ({len(bad)} class(es) off)"
        )

    if soft_labels is not None:
        if not isinstance(soft_labels, torch.Tensor):
            raise RetaError(f"soft_labels.pt: expected a tensor, got {type(soft_labels).__name__}")
        if soft_labels.dtype != torch.float32 or tuple(soft_labels.shape) != (images.shape[0], k):
            raise RetaError(
                f"soft_labels.pt: expected float32 [{images.shape[0]}, {k}], "
                f"got {soft_labels.dtype} {tuple(soft_labels.shape)}"
            )
        if not bool(torch.isfinite(soft_labels).all()):
            raise RetaError("soft_labels.pt: contains NaN or inf")


# ---------------------------------------------------------------------------------------------- writing


def _write_grid(path: Path, images: torch.Tensor, ipc: int) -> None:
    """One row per class (images are class-ordered, ``nrow=ipc``), area-downscaled above GRID_MAX_PIXELS."""
    from torchvision.utils import make_grid, save_image

    n, _, h, w = images.shape
    rows, pad = math.ceil(n / ipc), GRID_PADDING

    def pixels(th: int, tw: int) -> int:
        return (rows * (th + pad) + pad) * (ipc * (tw + pad) + pad)

    th, tw, scale = h, w, 1.0
    while pixels(th, tw) > GRID_MAX_PIXELS and (th > 1 or tw > 1):
        scale *= 0.9
        th, tw = max(1, int(h * scale)), max(1, int(w * scale))
    if (th, tw) != (h, w):
        images = torch.nn.functional.interpolate(images, size=(th, tw), mode="area")
    save_image(make_grid(images, nrow=ipc, padding=GRID_PADDING), str(path))


def _to_pil(img: torch.Tensor) -> Any:
    from PIL import Image

    arr = img.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)


def _write_png_tree(
    root: Path, images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]
) -> None:
    dirs = class_dir_names(class_names)
    for d in dirs:
        (root / d).mkdir(parents=True)
    counter = [0] * len(dirs)
    for img, y in zip(images, labels.tolist()):
        _to_pil(img).save(root / dirs[y] / f"{counter[y]}.png")
        counter[y] += 1


def _write_all(tmp: Path, images, labels, soft_labels, meta, png: bool) -> None:
    torch.save(images, tmp / "images.pt")
    torch.save(labels, tmp / "labels.pt")
    if soft_labels is not None:
        torch.save(soft_labels, tmp / "soft_labels.pt")
    _write_grid(tmp / "grid.png", images, int(meta["ipc"]))
    if png:
        _write_png_tree(tmp / "png", images, labels, meta["class_names"])
    atomic_write_json(tmp / "meta.json", meta)  # last: a dir with meta.json is complete


def save_distilled(
    out_dir: str | os.PathLike,
    images: torch.Tensor,
    labels: torch.Tensor,
    meta: Mapping[str, Any],
    soft_labels: torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    png: bool = True,
) -> Path:
    """Validate and write a format-v1 distilled set to ``out_dir`` atomically; returns ``out_dir``.

    ``meta`` must hold dataset, num_classes, ipc, mean, std, method, seed (and anything else worth
    recording); ``format_version``, ``image_shape`` and ``package_version`` are filled in here,
    ``class_names`` from the argument (or ``meta["class_names"]``). Images are moved to CPU float32 and
    stably sorted by label (soft labels with them), so class-ordered input keeps its order.
    An existing ``out_dir`` is replaced only once the new set is complete; on any failure nothing of
    the new set remains and the old one is untouched.
    """
    import reta

    meta = _plain(meta)
    missing = [k for k in CALLER_KEYS if k not in meta]
    if missing:
        raise RetaError(f"save_distilled: meta is missing {', '.join(missing)}")
    if class_names is None:
        class_names = meta.get("class_names")
    if class_names is None:
        raise RetaError("save_distilled: class_names not given (argument or meta['class_names'])")
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise RetaError("save_distilled: images must be a floating-point tensor [N, C, H, W]")
    images = images.detach().to("cpu", torch.float32)
    labels = torch.as_tensor(labels).detach().to("cpu", torch.int64)
    if soft_labels is not None:
        soft_labels = torch.as_tensor(soft_labels).detach().to("cpu", torch.float32)
    if labels.ndim == 1 and images.ndim == 4 and labels.shape[0] == images.shape[0]:
        order = torch.argsort(labels, stable=True)
        images, labels = images[order].contiguous(), labels[order].contiguous()
        if soft_labels is not None and soft_labels.ndim >= 1 and soft_labels.shape[0] == order.shape[0]:
            soft_labels = soft_labels[order].contiguous()
    meta = {
        "format_version": FORMAT_VERSION,
        **{k: v for k, v in meta.items() if k != "format_version"},
        "image_shape": list(images.shape[1:]),
        "class_names": [str(n) for n in class_names],
    }
    meta["mean"], meta["std"] = [float(x) for x in meta["mean"]], [float(x) for x in meta["std"]]
    meta.setdefault("package_version", reta.__version__)
    validate(images, labels, soft_labels, meta)

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RetaError(f"save_distilled: {out} exists and is not a directory")
    with atomic_directory(out) as tmp:
        _write_all(tmp, images, labels, soft_labels, meta, png)
    return out


# ---------------------------------------------------------------------------------------------- reading


def _load_tensor(path: Path) -> Any:
    if not path.is_file():
        raise RetaError(f"{path.name}: missing in {path.parent}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling / zip errors have many types
        raise RetaError(f"{path.name}: cannot load {path} ({load_failure(e)})") from e


def load_distilled(directory: str | os.PathLike) -> DistilledSet:
    """Read and validate a format-v1 distilled set (see module docstring); every problem is a RetaError."""
    d = Path(directory)
    if not d.is_dir():
        raise RetaError(f"distilled set not found: {d} is not a directory")
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        raise RetaError(f"meta.json: missing in {d}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RetaError(f"meta.json: cannot parse {meta_path} ({e})") from e
    if not isinstance(meta, dict):
        raise RetaError(f"meta.json: expected a JSON object in {meta_path}")
    if meta.get("format_version") not in SUPPORTED_VERSIONS:
        raise RetaError(
            f"meta.json: format_version {meta.get('format_version')!r} in {d} is not supported "
            f"(this reta reads {SUPPORTED_VERSIONS})"
        )
    images = _load_tensor(d / "images.pt")
    labels = _load_tensor(d / "labels.pt")
    soft = _load_tensor(d / "soft_labels.pt") if (d / "soft_labels.pt").exists() else None
    try:
        validate(images, labels, soft, meta)
    except RetaError as e:
        raise RetaError(f"{d}: {e}") from None
    return DistilledSet(images=images, labels=labels, soft_labels=soft, meta=meta)

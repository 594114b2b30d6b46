"""MNIST-style IDX files (MNIST, Fashion-MNIST, KMNIST), gzipped or plain.

Format (Y. LeCun, C. Cortes, C. Burges, "THE MNIST DATABASE of handwritten digits",
http://yann.lecun.com/exdb/mnist/, section "FILE FORMATS FOR THE MNIST DATABASE"; Fashion-MNIST,
https://github.com/zalandoresearch/fashion-mnist, uses the same files and names): a file starts with a
4-byte magic number — two zero bytes, one byte for the element type (0x08 unsigned byte, 0x09 signed
byte, 0x0B short, 0x0C int, 0x0D float, 0x0E double) and one byte for the number of dimensions — then
one big-endian 32-bit size per dimension, then the data in C order, big-endian. Image files have magic
2051 (0x00000803, ``[N, rows, cols]`` uint8), label files 2049 (0x00000801, ``[N]`` uint8).

Files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each optionally with ``.gz`` (detected by the gzip magic, not the suffix).
Nothing is cached on disk: Fashion-MNIST parses in well under a second.
"""

from __future__ import annotations

import functools
import gzip
import logging
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import torch

from reta.data.base import TensorImageDataset
from reta.data.formats import DatasetSpec, check_native_size, check_split, not_found
from reta.errors import RetaError

log = logging.getLogger(__name__)

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_PREFIX = {"train": "train", "test": "t10k"}
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"  # the Debian package `make install` installs
# torchvision's downloaders put the raw IDX files under <root>/<ClassName>/raw/
_TORCHVISION = {"fashionmnist": "FashionMNIST", "mnist": "MNIST", "kmnist": "KMNIST"}


@functools.cache
def debian_package_dir(package: str, file_stem: str) -> Path | None:
    """The directory where the installed Debian ``package`` put a file starting with ``file_stem``, asked from
    ``dpkg-query -L`` (so no install path is written into reta); None without dpkg or the package."""
    dpkg = shutil.which("dpkg-query")
    if dpkg is None:
        return None
    try:
        listing = subprocess.run([dpkg, "-L", package], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if listing.returncode != 0:
        return None
    hits = [Path(line) for line in listing.stdout.splitlines() if Path(line).name.startswith(file_stem)]
    return hits[0].parent if hits else None


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, zlib.error) as e:
        raise RetaError(f"corrupt IDX file {path}: cannot decompress ({e})") from e


def read_idx(path: str | Path, expect_magic: int | None = None) -> np.ndarray:
    """Parse one IDX file (plain or gzip) into a numpy array of its declared shape and type.

    Raises :class:`RetaError` naming the file when the magic number, dimension header or payload size is
    wrong (a truncated download, an HTML error page saved under the file name, the wrong file).
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise RetaError(f"corrupt IDX file {path}: bad magic number (expected two zero bytes)")
    code, ndim = data[2], data[3]
    magic = int.from_bytes(data[:4], "big")
    if expect_magic is not None and magic != expect_magic:
        raise RetaError(f"corrupt IDX file {path}: magic number {magic}, expected {expect_magic}")
    if code not in _DTYPES:
        raise RetaError(f"corrupt IDX file {path}: unknown element type 0x{code:02x}")
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise RetaError(f"corrupt IDX file {path}: truncated header ({ndim} dimension(s))")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise RetaError(
            f"corrupt IDX file {path}: header declares shape {dims} ({expected} bytes) "
            f"but the payload has {len(data) - header} bytes"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))  # a writable, native-endian copy


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _candidates(spec: DatasetSpec, data_dir: str | None) -> list[Path]:
    """Directories to search, in order (see :func:`load_idx`)."""
    tv = _TORCHVISION.get(_norm(spec.name))
    dirs: list[Path] = []
    for base in spec.search_bases(data_dir):
        dirs.append(base)
        if tv:
            dirs.append(base / tv / "raw")
    if spec.root is None:
        if data_dir is not None and tv:
            dirs.append(Path(data_dir).expanduser() / tv / "raw")
        if _norm(spec.name) == "fashionmnist":
            if data_dir is not None:
                dirs.append(Path(data_dir).expanduser() / "fashion-mnist")
            system = debian_package_dir(FASHION_MNIST_PACKAGE, "train-images-idx3-ubyte")
            if system is not None:
                dirs.append(system)
    return list(dict.fromkeys(dirs))


def _download(spec: DatasetSpec, data_dir: str | None) -> None:
    tv = _TORCHVISION.get(_norm(spec.name))
    bases = spec.search_bases(data_dir)
    if tv is None or not bases:
        return
    import torchvision.datasets as tvd

    try:
        for train in (True, False):
            getattr(tvd, tv)(root=str(bases[0]), train=train, download=True)
    except Exception as e:  # network errors come in many types
        raise RetaError(f"dataset '{spec.name}': download into {bases[0]} failed: {e}") from e


def load_idx(spec: DatasetSpec, split: str, data_dir: str | None) -> TensorImageDataset:
    """Load one split of an IDX dataset as uint8 ``[N, 1, H, W]``.

    Search order: ``root`` (and ``root/<TorchvisionName>/raw``) when set; otherwise ``{data_dir}/{name}``
    (and its ``<TorchvisionName>/raw``), ``{data_dir}/<TorchvisionName>/raw``, and — only for
    Fashion-MNIST, so that a config for MNIST can never silently get Fashion-MNIST —
    ``{data_dir}/fashion-mnist`` and the directory of the Debian package ``dataset-fashion-mnist``
    (:func:`debian_package_dir`). With ``download: true``
    MNIST / Fashion-MNIST / KMNIST are fetched by torchvision into ``{root or data_dir/name}``.
    """
    prefix = _PREFIX[check_split(split)]
    img_stem, lbl_stem = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"

    def search() -> tuple[Path, Path] | None:
        for d in _candidates(spec, data_dir):
            img, lbl = _find(d, img_stem), _find(d, lbl_stem)
            if img is not None and lbl is not None:
                return img, lbl
        return None

    found = search()
    if found is None and spec.download:
        _download(spec, data_dir)
        found = search()
    if found is None:
        raise not_found(spec, _candidates(spec, data_dir), f"{img_stem}[.gz] and {lbl_stem}[.gz]")
    img_path, lbl_path = found
    log.info("dataset %s, %s split: %s", spec.name, split, img_path)  # which of the searched places was used

    images = read_idx(img_path, IMAGES_MAGIC)
    labels = read_idx(lbl_path, LABELS_MAGIC)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise RetaError(
            f"corrupt IDX file {img_path}: expected uint8 [N, rows, cols], got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise RetaError(f"corrupt IDX file {lbl_path}: expected uint8 [N], got {labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise RetaError(
            f"IDX files disagree: {img_path} has {images.shape[0]} images, {lbl_path} has {labels.shape[0]} labels"
        )
    if images.shape[1] != images.shape[2]:
        raise RetaError(
            f"IDX file {img_path}: non-square images {images.shape[1]}x{images.shape[2]} are not supported"
        )
    if labels.size and int(labels.max()) >= spec.num_classes:
        raise RetaError(
            f"IDX file {lbl_path}: label {int(labels.max())} out of range for num_classes={spec.num_classes}"
        )
    check_native_size(spec, 1, images.shape[1])
    return TensorImageDataset(
        torch.from_numpy(images).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        spec.names_or(None),
    )

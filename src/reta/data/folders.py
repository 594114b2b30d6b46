"""Image-file datasets read lazily with PIL: Tiny-ImageNet-200 and ImageFolder trees.

**Tiny-ImageNet-200** (Stanford CS231n, http://cs231n.stanford.edu/tiny-imagenet-200.zip; layout as
unpacked from that archive)::

    tiny-imagenet-200/
      wnids.txt                      200 WordNet ids, one per line (NOT sorted in the official file)
      words.txt                      "<wnid>\\t<comma-separated names>" for all of ImageNet
      train/<wnid>/images/<wnid>_<k>.JPEG        500 per class, 64x64
      val/images/val_<k>.JPEG                    10 000, 64x64
      val/val_annotations.txt        "<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>" per val image
      test/images/…                  unlabelled, not used

The test split here is ``val`` (labels from ``val_annotations.txt``). **Class order is the sorted list of
wnids** (= ``sorted(os.listdir("train"))``, what ImageFolder and most distillation code use), not the
order of ``wnids.txt``: two label sequences are in circulation and a teacher trained under the other one
loses ~10 points (the class-order trap of docs/methods.md §2).

**ImageFolder** (torchvision ``ImageFolder`` layout; ImageNette / ImageWoof as distributed by fast.ai,
ImageNet-1K with ``val`` sorted into class folders)::

    <root>/train/<class>/*.{JPEG,jpg,png,…}
    <root>/val/<class>/*

The test split is ``val``. Class order is the sorted folder names of ``train`` (of ``val`` only when
``train`` is absent), applied to both splits. Every image is resized so its short side is
``round(image_size * 256 / 224)`` and center-cropped to ``image_size`` (the standard ImageNet evaluation
transform) for both splits; augmentation happens later, on tensors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from reta.data.formats import DatasetSpec, FileImageDataset, check_class_count, check_split, not_found
from reta.errors import RetaError

_IMG_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


class ResizeSquare:
    """Resize a PIL image to ``size x size`` (bilinear, antialiased) unless it already is."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, img: Any) -> Any:
        from PIL import Image

        if img.size == (self.size, self.size):
            return img
        return img.resize((self.size, self.size), Image.BILINEAR)


class ResizeCenterCrop:
    """Short side → ``round(size * 256 / 224)`` (bilinear, antialiased), then a center ``size x size`` crop."""

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.short = int(round(self.size * 256 / 224))

    def __call__(self, img: Any) -> Any:
        from PIL import Image

        w, h = img.size
        if w <= h:
            nw, nh = self.short, max(self.short, int(self.short * h / w))
        else:
            nw, nh = max(self.short, int(self.short * w / h)), self.short
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.BILINEAR)
        left = int(round((nw - self.size) / 2.0))
        top = int(round((nh - self.size) / 2.0))
        return img.crop((left, top, left + self.size, top + self.size))


# ------------------------------------------------------------------------------------------ Tiny-ImageNet


def _tiny_dir(spec: DatasetSpec, data_dir: str | None) -> tuple[Path | None, list[Path]]:
    looked = []
    for base in spec.search_bases(data_dir):
        for d in (base / "tiny-imagenet-200", base):
            looked.append(d)
            if (d / "wnids.txt").is_file():
                return d, looked
    return None, looked


def _read_lines(path: Path) -> list[str]:
    try:
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise RetaError(f"cannot read {path}: {e}") from e


def _images_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in _IMG_SUFFIXES and p.is_file())


def load_tiny_imagenet(spec: DatasetSpec, split: str, data_dir: str | None) -> FileImageDataset:
    """Load Tiny-ImageNet-200 (train, or val as the test split); classes in **sorted wnid** order.

    Class names: the config's ``class_names`` if given, else the first name in ``words.txt`` for each wnid
    (the wnid itself when ``words.txt`` is absent). Images are decoded on access, RGB (a few Tiny-ImageNet
    images are grayscale), and resized to ``image_size`` when it is not 64.
    """
    check_split(split)
    root, looked = _tiny_dir(spec, data_dir)
    sub = "train" if split == "train" else "val"
    if root is None or not (root / sub).is_dir():
        if root is not None:
            looked = [root / sub]
        raise not_found(spec, looked, f"tiny-imagenet-200/{{wnids.txt,{sub}/}}")
    wnids = sorted(set(_read_lines(root / "wnids.txt")))
    check_class_count(spec, len(wnids), str(root / "wnids.txt"))
    to_idx = {w: i for i, w in enumerate(wnids)}

    paths: list[Path] = []
    targets: list[int] = []
    if split == "train":
        for w in wnids:
            d = root / "train" / w / "images"
            if not d.is_dir():
                raise RetaError(f"Tiny-ImageNet at {root} is incomplete: missing {d}")
            files = _images_in(d)
            paths += files
            targets += [to_idx[w]] * len(files)
    else:
        ann = root / "val" / "val_annotations.txt"
        if not ann.is_file():
            raise not_found(spec, [ann], "val/val_annotations.txt")
        present = (
            {p.name for p in _images_in(root / "val" / "images")}
            if (root / "val" / "images").is_dir()
            else set()
        )
        for lineno, line in enumerate(_read_lines(ann), 1):
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) < 2:
                raise RetaError(f"{ann}:{lineno}: expected '<file>\\t<wnid>\\t…', got '{line}'")
            fname, wnid = fields[0], fields[1]
            if wnid not in to_idx:
                raise RetaError(f"{ann}:{lineno}: wnid {wnid} is not in wnids.txt")
            if fname not in present:
                raise RetaError(f"{ann}:{lineno}: image val/images/{fname} is missing")
            paths.append(root / "val" / "images" / fname)
            targets.append(to_idx[wnid])

    found_names: list[str] = list(wnids)
    words = root / "words.txt"
    if spec.class_names is None and words.is_file():
        table = {}
        for line in _read_lines(words):
            w, _, names = line.partition("\t")
            table[w.strip()] = names.split(",")[0].strip() or w.strip()
        found_names = [table.get(w, w) for w in wnids]
    ds = FileImageDataset(
        paths, targets, spec.names_or(found_names), spec.channels or 3, ResizeSquare(spec.image_size or 64)
    )
    ds.wnids = wnids
    return ds


# -------------------------------------------------------------------------------------------- ImageFolder


def _refuse_repeated_dirs(split_dir: Path) -> None:
    """Refuse a tree in which a directory link leads to a directory already seen (a loop such as ``ln -s . loop``, or
    two links to one folder): torchvision's scan follows links, so its images would be read twice or many times."""
    seen: dict[str, str] = {}
    for root, _, _ in os.walk(split_dir, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            raise RetaError(f"ImageFolder {split_dir}: {root} leads back to {seen[real]} through a directory link, so "
                            "its images would be read more than once; remove the link")
        seen[real] = root


def _scan(
    split_dir: Path, classes: list[str] | None, allow_empty: bool
) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes, samples) via torchvision's ImageFolder scan; ``classes`` fixes the class order if given.

    ``allow_empty`` lets a class have no images (a sub-sampled ``val``); torchvision < 0.18 lacks the
    option and then requires every class.
    """
    from torchvision.datasets import ImageFolder

    _refuse_repeated_dirs(split_dir)

    class _Folder(ImageFolder):
        def find_classes(self, directory: Any) -> tuple[list[str], dict[str, int]]:
            if classes is None:
                return super().find_classes(directory)
            return list(classes), {c: i for i, c in enumerate(classes)}

    try:
        try:
            folder = _Folder(str(split_dir), allow_empty=allow_empty)
        except TypeError:  # torchvision < 0.18
            folder = _Folder(str(split_dir))
    except FileNotFoundError as e:
        raise RetaError(f"ImageFolder {split_dir}: {e} (expected {split_dir}/<class>/<image files>)") from e
    return list(folder.classes), [(str(p), int(t)) for p, t in folder.samples]


def load_imagefolder(spec: DatasetSpec, split: str, data_dir: str | None) -> FileImageDataset:
    """Load ``<root>/train`` or ``<root>/val`` (the test split) of an ImageFolder tree, lazily.

    Looks in ``root`` when set, else ``{data_dir}/{name}``. Class order = sorted folder names of ``train``
    for both splits (a ``val`` folder missing a class cannot shift the labels); class names are the
    config's ``class_names`` when given (e.g. "tench" for n01440764), else the folder names.
    """
    check_split(split)
    if spec.image_size is None:
        raise RetaError(f"dataset '{spec.name}': format imagefolder needs image_size in the dataset config")
    sub = "train" if split == "train" else "val"
    looked, base = [], None
    for b in spec.search_bases(data_dir):
        looked.append(b / sub)
        if (b / sub).is_dir():
            base = b
            break
    if base is None:
        raise not_found(spec, looked, f"{sub}/<class>/<images>")

    classes = None
    if (base / "train").is_dir():
        classes = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
        if split == "test":
            extra = sorted(
                p.name for p in (base / "val").iterdir() if p.is_dir() and p.name not in set(classes)
            )
            if extra:
                raise RetaError(
                    f"ImageFolder {base / 'val'}: class folder(s) {extra[:5]} are not in {base / 'train'}"
                )
    classes, samples = _scan(base / sub, classes, allow_empty=split == "test")
    check_class_count(spec, len(classes), str(base / "train" if (base / "train").is_dir() else base / sub))
    return FileImageDataset(
        [p for p, _ in samples],
        [t for _, t in samples],
        spec.names_or(classes),
        spec.channels or 3,
        ResizeCenterCrop(spec.image_size),
    )

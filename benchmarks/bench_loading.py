"""Images/s of reading a 224-px JPEG ImageFolder: reta before this change vs now vs torchvision, same worker count.

Writes ``--images`` JPEGs (``--width`` x ``--height``, 10 classes; fake_data.py) into a temp dir, then times one
pass over every image (batches of ``--batch``) for each row, torch at one intra-op thread:

* ``before``: one image at a time in the main process (what ``FileImageDataset.gather`` and the ``num_workers=0``
  teacher loader did: PIL decode + resize-short-side-256 + center-crop-224, float [0, 1]);
* ``torchvision``: ``ImageFolder`` + ``DataLoader(num_workers=W)`` with ``Resize(256), CenterCrop(224), ToTensor()``;
* ``reta loader``: reta's teacher ``train_loader`` with ``data.num_workers=W`` (persistent worker processes);
* ``reta gather``: ``FileImageDataset.gather`` on W threads (patch pools, DRC/PTA pools, DM sampler, test accuracy);
* ``reta decode cache, build``: the first pass that writes the memory-mapped uint8 cache (W threads);
* ``reta decode cache, read``: every later pass (random batches from the cache).

    nice python benchmarks/bench_loading.py [--images 2000] [--workers 2] [--batch 64] [--width 320 --height 240]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def _rate(n: int, fn) -> tuple[float, float]:
    start = time.perf_counter()
    fn()
    secs = time.perf_counter() - start
    return n / secs, secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from fake_data import write_imagenet_layout
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from reta.data import loading
    from reta.data.registry import load_split
    from reta.training.teacher import train_loader

    with tempfile.TemporaryDirectory() as tmp:
        per_class = max(args.images // 10, 1)
        root = write_imagenet_layout(Path(tmp) / "folder", 10, per_class, 1, size=(args.width, args.height), seed=0)
        n = per_class * 10
        cfg = {"name": "bench", "format": "imagefolder", "num_classes": 10, "image_size": 224, "channels": 3,
               "mean": [0.5] * 3, "std": [0.5] * 3, "root": str(root)}
        w, b = args.workers, args.batch
        rows = []

        loading.configure({"num_workers": 0}, None)
        ds = load_split(cfg, "train", None)

        def before():
            for s in range(0, n, b):
                torch.stack([ds.load(i) for i in range(s, min(s + b, n))])

        rows.append(("before: one image at a time, main process", 0, *_rate(n, before)))

        tv = datasets.ImageFolder(str(root / "train"), transforms.Compose(
            [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()]))
        tv_loader = DataLoader(tv, batch_size=b, shuffle=True, num_workers=w, persistent_workers=w > 0)
        rows.append(("torchvision ImageFolder + DataLoader", w, *_rate(n, lambda: [x for x, _ in tv_loader])))

        loading.configure({"num_workers": w}, None)
        ds = load_split(cfg, "train", None)
        loader = train_loader(ds, b, seed=0)
        rows.append(("reta teacher loader (worker processes)", w, *_rate(n, lambda: [x for x, _ in loader])))
        rows.append(("reta gather (threads)", w, *_rate(n, lambda: [ds.gather(torch.arange(s, min(s + b, n)))
                                                                     for s in range(0, n, b)])))
        loading.configure({"num_workers": w, "decode_cache": True}, str(Path(tmp) / "cache"))
        rows.append(("reta decode cache: build (first pass)", w, *_rate(n, lambda: load_split(cfg, "train", None))))
        cached = load_split(cfg, "train", None)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        rows.append(("reta decode cache: read (random batches)", w, *_rate(n, lambda: [
            cached.gather(perm[s:s + b]) for s in range(0, n, b)])))

    base = rows[0][2]
    print(f"{n} JPEGs {args.width}x{args.height} -> 224 px, batch {b}, torch 1 thread, "
          f"{loading.cpu_count()} CPUs visible")
    print("| path | workers | images/s | seconds | vs before |\n|---|---|---|---|---|")
    for label, workers, rate, secs in rows:
        print(f"| {label} | {workers} | {rate:.0f} | {secs:.2f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()

"""The paper grid at toy scale on this machine (``make smoke-paper``): generated data in the real layouts, the real
``table1_paper`` grid (SRe2L, RDED, EDC, CV-DD, FADRM, FADRM+, RETA) and the DM family's paper configs through
``reta-run -m`` with ``debug=smoke``, then ``reta-report``. Prints the wall time of every command and the results table.

* ImageNet layout (JPEG ImageFolder ``train/`` + ``val/``) run as ``dataset=imagenet1k`` with its paper setting:
  pretrained teachers (ResNet-18, DenseNet-121, MobileNetV2, ResNet-50, EfficientNet-B0), here from local weight
  files written first (``teacher.pretrained_dir``), standing in for the downloaded ones — the offline path of a cluster;
* CIFAR layout (python pickle batches) run as ``dataset=cifar100``: teachers squeezed for one epoch, then the grid;
* ``method=dm,idm,dm_iid,idm_iid`` on the CIFAR layout (``protocol=hard``), the DM family's paper rows.

Usage: ``python benchmarks/smoke_paper.py --out DIR [--size 32]``. Everything is written under DIR (relative paths
inside); ``--size`` is the ImageNet-layout resolution and every BN-matching stage size (the paper's 200/224 px stages
at the toy budget cost minutes per job on a CPU; pass ``--size 0`` to keep them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fake_data import write_cifar100_layout, write_imagenet_layout, write_weight_file

IMAGENET_TEACHERS = ("resnet18.tv_in1k", "densenet121.tv_in1k", "mobilenetv2_100.ra_in1k", "resnet50.tv_in1k",
                     "efficientnet_b0.ra_in1k")  # the last two: the EDC and CV-DD rows
COMMON = ["ipc=1", "debug=smoke", "trainer=cpu", "paths.root_dir=.", "paths.cache_dir=cache", "num_threads=1",
          "logger=none"]


def prepare(out: Path, classes_in: int = 4, classes_cifar: int = 10) -> None:
    write_imagenet_layout(out / "data" / "imagenet", classes_in, n_train=6, n_val=3, size=(80, 60), seed=0)
    write_cifar100_layout(out / "data" / "cifar100", classes_cifar, n_train=4, n_test=2, seed=1)
    for i, name in enumerate(IMAGENET_TEACHERS):
        write_weight_file(name, classes_in, out / "weights" / f"{name}.pth", seed=i)


def commands(size: int, classes_in: int = 4, classes_cifar: int = 10) -> list[tuple[str, list[str]]]:
    sizes = [f"++method.smoke.stages.sizes={size}"] if size else []  # the BN methods' smoke block
    exe = str(Path(sys.executable).parent / "reta-run")
    imagenet = [exe, "-m", "+experiment=table1_paper", "dataset=imagenet1k", "dataset.root=data/imagenet",
                f"dataset.num_classes={classes_in}", f"dataset.image_size={size or 224}",
                "teacher.pretrained_dir=weights", *sizes, *COMMON]
    cifar = ["dataset=cifar100", "dataset.root=data/cifar100", f"dataset.num_classes={classes_cifar}",
             "dataset.class_names=null"]
    return [
        ("table1_paper imagenet1k-layout (pretrained teachers from local files)", imagenet),
        ("table1_paper cifar100-layout (teachers squeezed)", [exe, "-m", "+experiment=table1_paper", *cifar, *COMMON]),
        ("DM family paper configs, cifar100-layout", [
            exe, "-m", *cifar, "method=dm,idm,dm_iid,idm_iid", "protocol=hard", *COMMON,
            "hydra.sweep.dir=multirun/dm_paper/cifar100", "hydra.sweep.subdir=${method.name}_ipc${ipc}"]),
        ("reta-report", [str(Path(sys.executable).parent / "reta-report"), "inputs=[multirun]", "out=report/results",
                         "paths.root_dir=."]),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args()
    out = args.out
    if out.exists() and any(out.iterdir()):
        print(f"error: --out {out} exists and is not empty (a finished smoke is never overwritten)", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    t0 = time.perf_counter()
    prepare(out)
    rows = [("generate data + weight files", time.perf_counter() - t0, 0)]
    for label, cmd in commands(args.size):
        start = time.perf_counter()
        with open(out / "smoke.log", "a") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            rc = subprocess.run(cmd, cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        rows.append((label, time.perf_counter() - start, rc))
        if rc != 0:
            break
    total = time.perf_counter() - t0
    print("| step | wall s | exit |\n|---|---|---|")
    for label, secs, rc in rows:
        print(f"| {label} | {secs:.1f} | {rc} |")
    print(f"| **total** | **{total:.1f}** | |")
    (out / "timings.json").write_text(json.dumps({"rows": rows, "total_seconds": round(total, 1)}, indent=2))
    results = out / "report" / "results.md"
    if results.is_file():
        print("\n" + results.read_text())
    return max(rc for _, _, rc in rows)


if __name__ == "__main__":
    sys.exit(main())

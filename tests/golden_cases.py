"""The golden-set cases: small fixed-seed runs of each synthesis family with the shipped defaults, and a runner that
writes their images under a pinned CPU kernel set.

Why a pinned kernel set: float sums are reassociated differently by the AVX2 and AVX-512 kernels of ATen, MKL and
oneDNN, so the same run differs in the last bits from one x86-64 CPU to another (max |Δ| ~1e-6 on pixels). The
continuous families absorb that (a tolerance covers it); RETA does not, because its mutual k-NN graph and the
persistence pairing are discrete choices that a last-bit difference can flip (0.06–0.2 on pixels). Under the pinned
set — ATen's portable kernels (``ATEN_CPU_CAPABILITY=default``), MKL's conditional numerical reproducibility
(``MKL_CBWR=COMPATIBLE``, Intel MKL's documented cross-CPU mode), oneDNN and NNPACK switched off so convolutions go
through ATen + MKL, one thread — every x86-64 CPU runs the same instruction sequence for the arithmetic, so the
references written here hold on any of them.

``python tests/golden_cases.py OUT_DIR [CASE …]`` runs the cases (all by default) in this process and writes
``OUT_DIR/<case>_images.pt``; :func:`pinned_env` is the environment to run it under.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent

#: environment of the pinned kernel set (see the module docstring)
PINNED = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}

BN_TINY = ["ipc=2", "method.stages.sizes=[28,28,28]", "method.stages.budgets=[3,3,2]", "method.init.mipc=6",
           "method.init.num_crop=2", "method.log_every=1"]
# the sizes of the PTA graph scaled to 2 images per class and 6 pool entries; every other PTA and DRC setting is the
# shipped one (method=reta on Fashion-MNIST: PTA every 4th step, λ_topo 100, DRC off)
PTA_TINY = ["method.callbacks.pta.refresh_every=2", "method.callbacks.pta.k=3", "method.callbacks.pta.grid=8",
            "method.callbacks.pta.num_subsets=4"]
TWO_TEACHERS = "method.teachers=[convnet_tiny,{name:convnet,kwargs:{depth:1,width:4,norm:batch},label:c1}]"
TINY_BACKBONE = ["backbone=random", "backbone.model.kwargs.depth=2", "backbone.model.kwargs.width=8"]

#: case → overrides of ``reta-distill`` (on top of :func:`helpers.tiny_overrides`, ``seed=3``)
CASES: dict[str, list[str]] = {
    "fadrm": ["method=fadrm", *BN_TINY],
    "reta": ["method=reta", *BN_TINY, *PTA_TINY, TWO_TEACHERS],
    # DRC as shipped for every dataset but Fashion-MNIST
    "reta_drc": ["method=reta", *BN_TINY, *PTA_TINY, TWO_TEACHERS, "method.residual.anchors.enabled=true"],
    "dm": ["method=dm", "ipc=2", "method.iterations=3", "method.batch_real=4", "method.embedder.kwargs.depth=2",
           "method.embedder.kwargs.width=8", "method.log_every=1"],
    "sfm": ["method=sfm", "ipc=1", *TINY_BACKBONE, "method.iterations=4", "method.extent_every=2",
            "method.log_every=1"],
}


def run_case(name: str, tmp: Path):
    """Distil case ``name`` on the tiny IDX fixture under ``tmp`` and return its images."""
    from reta import distill
    from reta.data.distilled import load_distilled

    from fixtures import write_idx_dataset
    from helpers import compose_cfg, tiny_overrides

    root = tmp / "fmnist"
    if not root.is_dir():
        write_idx_dataset(root, n_train=60, n_test=30, classes=10, gz=True)
    ov = [o for o in tiny_overrides(tmp, root) if not o.startswith("paths.output_dir=")]
    ov += [f"paths.output_dir={tmp / name}", "seed=3"]
    return load_distilled(distill.run(compose_cfg("distill", [*ov, *CASES[name]]))["distilled"]).images


def pinned_env() -> dict[str, str]:
    return {**os.environ, **PINNED, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR),
                                                                                 os.environ.get("PYTHONPATH")]))}


def main(argv: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False  # oneDNN picks kernels (and blockings) per CPU
    torch.backends.nnpack.set_flags(False)  # NNPACK too
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for name in argv[1:] or sorted(CASES):
        torch.save(run_case(name, out / "work"), out / f"{name}_images.pt")


if __name__ == "__main__":
    sys.path.insert(0, str(TESTS_DIR))
    main(sys.argv[1:])

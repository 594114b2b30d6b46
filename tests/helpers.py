"""Config composition and CLI helpers for tests."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONF_DIR = str(Path(__file__).resolve().parent.parent / "src" / "reta" / "conf")
REPO = Path(__file__).resolve().parent.parent


def compose_cfg(name: str, overrides: list[str]) -> DictConfig:
    """Compose primary config ``name`` with ``overrides`` outside a Hydra app (paths must be given)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def tiny_overrides(tmp_path: Path, data_root: Path) -> list[str]:
    """A Fashion-MNIST-shaped IDX fixture, the tiny ConvNet and one-epoch budgets, all outputs under tmp_path."""
    return [
        f"dataset.root={data_root}",
        f"paths.output_dir={tmp_path / 'out'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.data_dir={tmp_path / 'data'}",
        "model=convnet_tiny",
        "recipe.epochs=1",
        "recipe.batch_size=32",
        "progress_bar=false",
        "logger=none",
        "num_threads=1",
    ]


def run_cli(script: str, args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a console script of the installed package (``reta-squeeze`` …) in ``cwd``."""
    exe = Path(sys.executable).parent / script
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


class KillAt(L.Callback):
    """Raises once at global step ``at_step`` (a stand-in for a killed process); the marker file makes it one-shot."""

    def __init__(self, at_step: int, marker: str) -> None:
        self.at_step, self.marker = at_step, Path(marker)

    def on_synthesis_step(self, trainer, module, step) -> None:
        if step.global_step == self.at_step and not self.marker.exists():
            self.marker.touch()
            raise RuntimeError("killed")


class TotalVariation:
    """A loss term plugged in through ``method.losses`` (docs/architecture.md, "Add a loss term")."""

    name = "tv"

    def __init__(self, weight: float = 1e-3) -> None:
        self.weight = float(weight)

    def __call__(self, step):
        x = step.images
        return self.weight * ((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., 1:] - x[..., :-1]).abs().mean())


def with_out(ov: list[str], out: Path) -> list[str]:
    """``ov`` with its ``paths.output_dir`` replaced by ``out``."""
    return [o for o in ov if not o.startswith("paths.output_dir=")] + [f"paths.output_dir={out}"]


def cli(module, args: list[str], monkeypatch, capsys, cwd: Path | None = None) -> tuple[int, list[str], str]:
    """Run a console script's ``main`` in-process (Hydra app, callbacks included), in ``cwd`` when given;
    (exit code, error lines, stderr)."""
    if cwd is not None:
        monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["reta", *args])
    code, handlers = 0, logging.root.handlers[:]
    try:
        module.main()
    except SystemExit as exit_:
        code = exit_.code
    finally:  # Hydra pointed the root logger at this test's captured stderr and its job log
        logging.root.handlers[:] = handlers
    err = capsys.readouterr().err
    return code, [ln for ln in err.splitlines() if ln.startswith("error:")], err


#: Tiny budgets for the BN-matching family (two 3-step stages), the random backbone and the frozen family (SFM).
TINY_BN = ["ipc=2", "method.stages.sizes=[28,28]", "method.stages.budgets=[3,3]", "method.init.mipc=6",
           "method.init.num_crop=2", "method.log_every=1"]
TINY_BACKBONE = ["backbone=random", "backbone.model.kwargs.depth=2", "backbone.model.kwargs.width=8",
                 "backbone.probe.epochs=2", "backbone.probe.batch_size=32", "backbone.probe.holdout=0.25"]
TINY_SFM = ["method=sfm", "ipc=1", "method.iterations=4", "method.extent_every=2", "method.log_every=1"]


def tiny_fmnist(tmp_path: Path) -> list[str]:
    """:func:`tiny_overrides` on an 80-image, 10-class IDX fixture under ``tmp_path``, with the tiny random backbone."""
    from fixtures import write_idx_dataset

    root = write_idx_dataset(tmp_path / "fmnist", n_train=80, n_test=20, classes=10, gz=False)
    return [*tiny_overrides(tmp_path, root), *TINY_BACKBONE]


def fit_student_state(module, loader, epochs: int) -> dict:
    """Fit a student module on CPU for ``epochs`` (no logger, progress bar, summary or checkpoints; Lightning's
    warnings silenced) and return its network's state dict."""
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, deterministic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader)
    return module.model.state_dict()

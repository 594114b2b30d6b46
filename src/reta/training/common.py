"""Pieces shared by every training loop: seeding, optimisers, LR schedules, test accuracy, Trainer/logger set-up."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn

from reta.data.augment import normalize
from reta.data.base import ImageDataset
from reta.errors import RetaError
from reta.utils.device import gpu_run

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step_half", "step_dc", "constant")


def set_threads(num_threads: int | None) -> None:
    """Pin torch's intra-op CPU threads (``None``: leave torch's default); anything but a positive integer is one
    line."""
    if num_threads is None:
        return
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise RetaError(f"num_threads must be a positive integer or null (torch's default), got {num_threads!r}")
    torch.set_num_threads(num_threads)


def configure_data(cfg) -> None:
    """Apply the run's ``data`` config (workers, pinned memory, decode-once cache) to every real-data read of this
    process (:mod:`reta.data.loading`)."""
    from omegaconf import OmegaConf

    from reta.data.loading import configure

    data = cfg.get("data")
    data = OmegaConf.to_container(data, resolve=True) if data is not None and not isinstance(data, dict) else data
    trainer = cfg.get("trainer")
    trainer = (OmegaConf.to_container(trainer, resolve=True)
               if trainer is not None and not isinstance(trainer, dict) else trainer)
    configure(data, cfg.paths.cache_dir, cuda=eval_device(trainer or {}) == "cuda")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch (Lightning's helper) and return a fresh CPU generator for augmentation."""
    L.seed_everything(int(seed), workers=True, verbose=False)
    return torch.Generator().manual_seed(int(seed))


def make_optimizer(
    params: Iterable[tuple[str, nn.Parameter]],
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    decay_only_weights: bool = False,
) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW. ``decay_only_weights`` puts weight decay only on >1-d ``weight`` tensors
    (the FKD/FADRM student recipe, docs/methods.md §5.1)."""
    named = list(params)
    if decay_only_weights:
        decay = [p for n, p in named if p.ndim > 1 and n.endswith("weight")]
        no_decay = [p for n, p in named if not (p.ndim > 1 and n.endswith("weight"))]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    else:
        groups = [{"params": [p for _, p in named], "weight_decay": weight_decay}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise RetaError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def decay_step(schedule: str, total_steps: int, steps_per_epoch: int = 1) -> int | None:
    """The optimizer step from which a step schedule runs at 0.1 × the base LR (``None`` for the others).

    ``step_half``: half of the steps. ``step_dc``: DC's ``evaluate_synset`` [code: VICO-UoE/DatasetCondensation
    ``utils.py``], which runs ``Epoch + 1`` epochs (here ``epochs`` = Epoch + 1) and decays after epoch index
    ``Epoch // 2 + 1``: the first ``(epochs − 1) // 2 + 2`` epochs at the base LR (1001 epochs: 502, then 499 at
    0.1×; 301: 152, then 149).
    """
    if schedule == "step_half":
        return max(int(total_steps), 1) // 2
    if schedule == "step_dc":
        spe = max(int(steps_per_epoch), 1)
        epochs = max(int(total_steps), 1) // spe
        return ((epochs - 1) // 2 + 2) * spe
    return None


def restart_at_decay(module: L.LightningModule, schedule: str, total_steps: int, steps_per_epoch: int) -> None:
    """``step_dc``: clear the optimiser's state (momentum buffers) at the decay step, as DC's ``evaluate_synset``
    recreates its optimiser with the decayed LR [code: VICO-UoE/DatasetCondensation ``utils.py``]; call it from
    ``on_train_batch_start``. Other schedules keep the state."""
    if schedule == "step_dc" and module.global_step == decay_step(schedule, total_steps, steps_per_epoch):
        for opt in module.trainer.optimizers:
            opt.state.clear()


def lr_lambda(schedule: str, total_steps: int, cosine_eta: float = 1.0, steps_per_epoch: int = 1):
    """Multiplier of the base LR at optimizer step ``t``.

    ``cosine``: ½(1 + cos(π t / (T η))) — η = 1 decays to 0, η = 2 ends at ½ (FKD/FADRM student, docs/methods.md §5.1).
    ``step_half`` / ``step_dc``: ×0.1 from :func:`decay_step` on (DC/DM ``evaluate_synset``, docs/methods.md §5.2;
    ``step_dc`` is its exact epoch, and the student also restarts the optimiser there, as the reference recreates
    it). ``constant``: 1.
    """
    if schedule not in SCHEDULES:
        raise RetaError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    total = max(int(total_steps), 1)
    decay = decay_step(schedule, total, steps_per_epoch)

    def f(t: int) -> float:
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(t, total) / (total * cosine_eta)))
        if decay is not None:
            return 0.1 if t >= decay else 1.0
        return 1.0

    return f


@torch.no_grad()
@torch.no_grad()
def test_accuracy(
    model: nn.Module, dataset: ImageDataset, mean, std, batch_size: int = 500, device: torch.device | str = "cpu"
) -> float:
    """Top-1 accuracy (fraction) of ``model`` in eval mode on every image of ``dataset``."""
    was_training = model.training
    model.eval()
    correct, n = 0, len(dataset)
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n))
        x = normalize(dataset.gather(idx).to(device), mean, std)
        correct += int((model(x).argmax(1).cpu() == dataset.targets[idx]).sum())
    model.train(was_training)
    return correct / max(n, 1)


def eval_device(trainer_cfg: Mapping) -> str:
    """The device of the ``trainer`` config's accelerator for work done outside a Trainer (test accuracy, scoring)."""
    acc = str((trainer_cfg or {}).get("accelerator", "cpu"))
    if gpu_run(trainer_cfg):
        return "cuda"
    if acc == "mps" and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


#: keys of a ``logger`` config that reta reads itself (not logger constructor arguments)
RETA_LOGGER_KEYS = ("run_name_key", "offline_without_key", "offline_when_unreachable", "stage_images", "artifact")


def build_logger(logger_cfg: Mapping | None, save_dir: str, run_name: str, group: str | None = None):
    """A Lightning logger from the ``logger`` group: ``_target_`` names its class (CSVLogger, WandbLogger,
    TensorBoardLogger, MLFlowLogger, …; ``_target_: null`` = no logger) and the other keys are its constructor's
    arguments. reta adds ``save_dir`` (the run dir) and puts the run's name (``squeeze``, ``distill``, a student's
    name) under the argument named by ``run_name_key`` (``version`` for CSV/TensorBoard, ``name`` for W&B);
    ``offline_without_key: true`` makes W&B offline when no API key is configured, ``offline_when_unreachable: S``
    when its server (``WANDB_BASE_URL``) does not answer within S seconds (0 = never asked); ``group`` is passed when
    given."""
    spec = dict(logger_cfg or {})
    extras = {k: spec.pop(k) for k in RETA_LOGGER_KEYS if k in spec}
    if not spec.get("_target_"):
        return False
    kwargs = {"save_dir": save_dir}
    if extras.get("run_name_key"):
        kwargs[str(extras["run_name_key"])] = run_name
    if extras.get("offline_without_key"):
        has_key = bool(os.environ.get("WANDB_API_KEY")) or os.path.exists(os.path.expanduser("~/.netrc"))
        kwargs["offline"] = bool(spec.pop("offline", False)) or not has_key
        wait = float(extras.get("offline_when_unreachable") or 0)
        if not kwargs["offline"] and wait > 0:
            from reta.utils.network import reachable

            url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
            ok, why = reachable(url, wait)
            if not ok:
                log.warning("W&B server unreachable (%s): logging offline under %s; upload later with `wandb sync`",
                            why, save_dir)
                kwargs["offline"] = True
    if group is not None:
        kwargs["group"] = group
    try:
        return instantiate(spec, **kwargs)
    except Exception as err:  # noqa: BLE001 - hydra wraps import and constructor errors in its own types
        raise RetaError(f"logger ({spec['_target_']}): {str(err.__cause__ or err).splitlines()[0]}") from None


def build_trainer(
    trainer_cfg: Mapping, max_epochs: int, logger, progress_bar: bool, default_root_dir: str, **extra
) -> L.Trainer:
    """A Lightning Trainer from the ``trainer`` config group (accelerator, devices, strategy, precision, …)."""
    kwargs = dict(trainer_cfg)
    kwargs.update(
        max_epochs=max_epochs,
        logger=logger,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        default_root_dir=default_root_dir,
        num_sanity_val_steps=0,
        log_every_n_steps=kwargs.pop("log_every_n_steps", 10),
    )
    kwargs.update(extra)
    kwargs.setdefault("enable_checkpointing", False)
    try:
        return L.Trainer(**kwargs)
    except TypeError as err:
        raise RetaError(f"bad trainer config {sorted(trainer_cfg)}: {err}") from err

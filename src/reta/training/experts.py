"""Expert trajectories for trajectory matching (MTT), a cached, keyed product like teachers.

[code: GeorgeCazenavette/mtt-distillation ``buffer.py``; paper: Cazenavette et al., CVPR 2022, arXiv 2203.11932 §3]
``num_experts`` networks (the method's ``net``, each from its own seed) are trained on the real training split with SGD
(``lr``, ``momentum`` 0, weight decay 0, constant lr, batch 256, per-image DSA), and the flat parameter vector
(``net.parameters()`` order) is recorded at initialisation and after every epoch: ``epochs + 1`` snapshots per expert.
Training goes through the hard-label student loop (:class:`reta.training.student.StudentModule` under a Lightning
Trainer) with a callback that takes the snapshots.

Cache: ``${paths.cache_dir}/experts/<dataset>_<model>_<key>/`` with ``expert_<i>.pt`` (``{"params": [epochs+1, P]}``)
and ``meta.json`` (recipe, seed, parameter names and shapes, each expert's test accuracy, build seconds); the key
hashes the dataset, the model and the recipe (:func:`reta.training.teacher.cache_key`). Finished experts wait in
``.<entry name>.partial/`` (a killed build continues from the first missing one); the directory itself is written
atomically once every expert is trained, and a later run with the same recipe finds it by its key.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from torch import nn

from reta.errors import CheckpointError, RetaError
from reta.training.common import build_logger, build_trainer, seed_everything
from reta.training.student import Protocol, StudentModule, student_loader
from reta.training.teacher import cache_key, evaluate_teacher, new_model, timestamp
from reta.utils.config import plain
from reta.utils.io import atomic_directory, atomic_torch_save
from reta.utils.schema import parse

log = logging.getLogger(__name__)

TrainerFactory = Callable[[int, str, list], L.Trainer]


@dataclass(frozen=True)
class ExpertRecipe:
    """How the experts are trained (every field is part of the cache key); ``buffer.py`` flag names in brackets.
    The values come from the method config (``method.experts`` of ``conf/method/mtt.yaml``), the one source of
    defaults (reference values: 100 experts, 50 epochs, lr 0.01, no momentum, no weight decay, batch 256, DSA)."""

    num_experts: int  # [num_experts]
    epochs: int  # [train_epochs]
    lr: float  # [lr_teacher]
    momentum: float  # [mom]
    weight_decay: float  # [l2]
    batch_size: int  # [batch_train]
    dsa: bool  # per-image DSA, color_crop_cutout_flip_scale_rotate [dsa]
    seed: int  # expert i is initialised and shuffled from seed·1000 + i

    @classmethod
    def from_cfg(cls, d) -> ExpertRecipe:
        r = parse(cls, d, "method.experts")
        r.validate()
        return r

    def validate(self) -> None:
        if self.num_experts < 1 or self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise RetaError("method.experts: num_experts, epochs, batch_size must be >= 1 and lr > 0")


def param_layout(net: nn.Module) -> tuple[list[str], list[list[int]]]:
    """Names and shapes of ``net.parameters()`` in order: the layout of a flat parameter vector."""
    named = list(net.named_parameters())
    return [n for n, _ in named], [list(p.shape) for _, p in named]


def flat_params(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).float().cpu()


def entry_path(cache_dir: str | Path, ds: Mapping, net_cfg: Mapping, recipe: ExpertRecipe, holdout: int = 0) -> Path:
    key = cache_key(ds, net_cfg, recipe, recipe.seed)
    suffix = f"_holdout{holdout}" if holdout else ""
    return Path(cache_dir) / "experts" / f"{ds['name']}_{net_cfg['name']}_{key}{suffix}"


class _Snapshots(L.Callback):
    """Flat parameters at the start and after every training epoch."""

    def __init__(self) -> None:
        self.snaps: list[torch.Tensor] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.snaps.append(flat_params(pl_module.model))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.snaps.append(flat_params(pl_module.model))


def expert_protocol(recipe: ExpertRecipe) -> Protocol:
    """The experts' training as a hard-label protocol: SGD, constant lr, per-image DSA, no test during training."""
    return Protocol(name="expert", labels="hard", optimizer="sgd", lr=recipe.lr, momentum=recipe.momentum,
                    weight_decay=recipe.weight_decay, decay_only_weights=False, batch_size=recipe.batch_size,
                    epochs=recipe.epochs, schedule="constant", cosine_eta=1.0, temperature=1.0, rrc_scale_min=0.0,
                    crop_pad=0, flip=False, cutmix=False, dsa=recipe.dsa, teacher_mode="eval",
                    eval_every=recipe.epochs + 1, soft_labels="online", shuffle_patches=1, ema_decay=0.0,
                    micro_batches=1, lr_source="protocol", committee=None)


def train_expert(i: int, net_cfg: Mapping, ds: Mapping, recipe: ExpertRecipe, images: torch.Tensor,
                 labels: torch.Tensor, trainer_factory: TrainerFactory) -> tuple[torch.Tensor, nn.Module]:
    """Train expert ``i``; returns its trajectory ``[epochs + 1, P]`` and the trained network.
    ``trainer_factory(max_epochs, run_name, callbacks)`` → a Lightning Trainer (the stage's trainer, logger, bar)."""
    seed = recipe.seed * 1000 + i
    p = expert_protocol(recipe)
    loader = student_loader(images, labels, p.batch_size, seed)
    seed_everything(seed)
    net = new_model(net_cfg, ds)
    module = StudentModule(net, p, ds["mean"], ds["std"], len(loader), seed)
    snaps = _Snapshots()
    trainer_factory(p.epochs, f"expert_{i}", [snaps]).fit(module, loader)
    return torch.stack(snaps.snaps), net


def build_experts(entry: Path, net_cfg: Mapping, ds: Mapping, recipe: ExpertRecipe, train, test,
                  trainer_factory: TrainerFactory) -> dict:
    """Train every expert and write the entry; returns its meta. Each finished expert is saved at once in
    ``.<entry>.partial/`` beside the entry, so a killed build continues with the first missing expert; the entry
    appears (atomically) only when every expert is there."""
    images = train.gather(torch.arange(len(train)))
    labels = torch.as_tensor(train.targets).long()
    names, shapes = param_layout(new_model(net_cfg, ds))
    partial = entry.parent / f".{entry.name}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    accs, reused = [], 0
    for i in range(recipe.num_experts):
        done = partial / f"expert_{i}.pt"
        if done.is_file():
            accs.append(torch.load(done, map_location="cpu", weights_only=True)["test_acc"])
            reused += 1
            continue
        traj, net = train_expert(i, net_cfg, ds, recipe, images, labels, trainer_factory)
        accs.append(evaluate_teacher(net, test, ds) if test is not None else None)
        atomic_torch_save({"params": traj, "test_acc": accs[-1]}, done)
        log.info("expert %d/%d: test acc %s", i + 1, recipe.num_experts, accs[-1])
    meta = {"dataset": ds["name"], "model": dict(net_cfg), "recipe": asdict(recipe), "param_names": names,
            "param_shapes": shapes, "num_params": int(sum(torch.Size(s).numel() for s in shapes)),
            "snapshots": recipe.epochs + 1, "test_acc": accs, "train_images": len(labels),
            "build_seconds": round(time.perf_counter() - start, 2), "experts_from_an_earlier_build": reused,
            "created": timestamp(), "key": entry.name}
    with atomic_directory(entry) as tmp:
        for i in range(recipe.num_experts):
            os.replace(partial / f"expert_{i}.pt", tmp / f"expert_{i}.pt")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    shutil.rmtree(partial, ignore_errors=True)
    return meta


@dataclass
class ExpertBuffer:
    """A loaded expert buffer: ``trajectories[i]`` is ``[epochs + 1, P]``."""

    entry: Path
    meta: dict
    trajectories: list[torch.Tensor]


def load_experts(entry: Path) -> ExpertBuffer:
    way_out = "delete that directory to rebuild it"
    try:
        meta = json.loads((entry / "meta.json").read_text())
        trajs = [torch.load(entry / f"expert_{i}.pt", map_location="cpu", weights_only=True)["params"]
                 for i in range(int(meta["recipe"]["num_experts"]))]
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"expert buffer {entry} is damaged ({err}); {way_out}") from None
    return ExpertBuffer(entry, meta, trajs)


def get_experts(cache_dir: str | Path, net_cfg: Mapping, ds: Mapping, recipe: ExpertRecipe, train, test,
                trainer_factory: TrainerFactory, holdout: int = 0) -> ExpertBuffer:
    """The expert buffer of this recipe: from the cache, or trained now and cached."""
    entry = entry_path(cache_dir, ds, net_cfg, recipe, holdout)
    if not (entry / "meta.json").is_file():
        log.info("training %d experts x %d epochs -> %s", recipe.num_experts, recipe.epochs, entry)
        build_experts(entry, net_cfg, ds, recipe, train, test, trainer_factory)
    else:
        log.info("expert buffer from cache: %s", entry)
    return load_experts(entry)


def recipe_of(method: Mapping) -> ExpertRecipe:
    """The expert recipe of a method config (``method.experts``, with ``method.net`` the experts' network); one line
    for a method that has none."""
    if not isinstance(method, Mapping) or "experts" not in method or "net" not in method:
        name = method.get("name") if isinstance(method, Mapping) else method
        raise RetaError(f"method={name} has no expert buffer (method.experts and method.net); use a "
                        "trajectory-matching method (method=mtt)")
    return ExpertRecipe.from_cfg(method["experts"])


def expert_buffer(cfg, train, test, out_dir) -> ExpertBuffer:
    """The expert buffer of ``cfg.method`` (its ``net`` and ``experts`` recipe): a cache hit, or trained now with the
    run's trainer, logger and progress bar. Shared by the experts stage and the MTT family."""
    method = plain(cfg.method)
    recipe = recipe_of(method)

    def trainer_factory(epochs: int, run_name: str, callbacks: list):
        logger = build_logger(plain(cfg.logger), str(out_dir), run_name)
        return build_trainer(plain(cfg.trainer), epochs, logger, bool(cfg.get("progress_bar", False)), str(out_dir),
                             callbacks=callbacks)

    return get_experts(cfg.paths.cache_dir, method["net"], plain(cfg.dataset), recipe, train, test, trainer_factory,
                       int(cfg.get("holdout_per_class", 0) or 0))

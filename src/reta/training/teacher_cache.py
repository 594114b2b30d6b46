"""The teacher cache: ``get_teacher(cfg)`` returns the frozen teacher of a config — from ``teacher.checkpoint``,
from the
cache under ``${paths.cache_dir}/teachers`` (keyed by dataset + model + recipe + seed), or trained now and cached.

Used by every stage that needs a teacher (squeeze, distill, evaluate) and by the DM family's pretrained pool, so it
lives below the stages (stages never import each other).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, open_dict
from torch import nn

from reta.data.registry import load_split
from reta.errors import CheckpointError, RetaError
from reta.training.common import build_logger, build_trainer, seed_everything
from reta.training.teacher import (
    Recipe,
    cache_key,
    evaluate_teacher,
    fit_teacher,
    load_state_dict_file,
    load_weights,
    new_model,
    timestamp,
    write_cache_entry,
)
from reta.utils.config import dataclass_from, output_dir, plain
from reta.utils.io import atomic_write_json

log = logging.getLogger(__name__)


def recipe_from_cfg(cfg: DictConfig) -> Recipe:
    recipe = dataclass_from(Recipe, cfg.recipe, "recipe")
    if recipe.epochs <= 0 or recipe.batch_size <= 0 or recipe.lr <= 0:
        raise RetaError("recipe: epochs, batch_size and lr must be > 0")
    return recipe


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def teacher_entry(cfg: DictConfig) -> Path:
    """The cache directory that holds (or will hold) the teacher of ``cfg``."""
    ds, mc = plain(cfg.dataset), plain(cfg.model)
    key = cache_key(ds, mc, recipe_from_cfg(cfg), int(cfg.seed))
    return Path(cfg.paths.cache_dir) / "teachers" / f"{ds['name']}_{mc['name']}_{key}"


def read_cache_entry(entry: Path, model: nn.Module) -> dict:
    """Load ``entry/model.pt`` into ``model`` and return ``entry/meta.json``; a damaged entry (either file missing,
    unreadable or not fitting) is one line naming the entry and the way out, ``teacher.force=true``. No automatic
    rebuild: a teacher retrained behind the user's back would change every set distilled with it."""
    way_out = "pass teacher.force=true to retrain it (or delete that directory)"
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if not isinstance(meta, dict) or "test_acc" not in meta:
            raise ValueError("no test_acc")
    except FileNotFoundError:
        raise CheckpointError(f"teacher cache entry {entry} is damaged (meta.json is missing); {way_out}") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"teacher cache entry {entry} is damaged (meta.json is unreadable: {err}); "
                              f"{way_out}") from None
    try:
        load_weights(model, load_state_dict_file(entry / "model.pt"), str(entry / "model.pt"))
    except CheckpointError as err:
        raise CheckpointError(f"teacher cache entry {entry} is damaged ({err}); {way_out}") from None
    return meta


def get_teacher(cfg: DictConfig, train=None, test=None) -> tuple[nn.Module, dict]:
    """The frozen teacher of ``cfg`` (eval mode) and its meta: from ``teacher.checkpoint``, the cache, or trained
    now."""
    ds, mc = plain(cfg.dataset), plain(cfg.model)
    ckpt = cfg.teacher.get("checkpoint")
    model = new_model(mc, ds)
    if ckpt:
        load_weights(model, load_state_dict_file(ckpt), str(ckpt))
        test = test if test is not None else load_split(cfg.dataset, "test", cfg.paths.data_dir)
        meta = {
            "name": mc["name"],
            "model": mc,
            "dataset": ds["name"],
            "source": str(ckpt),
            "checkpoint_sha256": _file_sha256(Path(ckpt)),
            "test_acc": evaluate_teacher(model, test, ds),
            "mean": ds["mean"],
            "std": ds["std"],
        }
        return model.eval().requires_grad_(False), meta
    entry = teacher_entry(cfg)
    if entry.exists() and not cfg.teacher.get("force", False):
        meta = read_cache_entry(entry, model)
        log.info("teacher from cache: %s (test acc %.4f)", entry, meta["test_acc"])
        return model.eval().requires_grad_(False), meta
    recipe = recipe_from_cfg(cfg)
    train = train if train is not None else load_split(cfg.dataset, "train", cfg.paths.data_dir)
    test = test if test is not None else load_split(cfg.dataset, "test", cfg.paths.data_dir)
    seed_everything(int(cfg.seed))
    model = new_model(mc, ds)
    out = output_dir(cfg)

    def trainer_factory(epochs: int):
        logger = build_logger(plain(cfg.logger), str(out), "squeeze")
        return build_trainer(plain(cfg.trainer), epochs, logger, bool(cfg.progress_bar), str(out))

    seconds = fit_teacher(model, train, ds, recipe, int(cfg.seed), trainer_factory)
    acc = evaluate_teacher(model, test, ds)
    meta = {
        "name": mc["name"],
        "model": mc,
        "dataset": ds["name"],
        "recipe": recipe.__dict__,
        "seed": int(cfg.seed),
        "test_acc": acc,
        "train_seconds": round(seconds, 2),
        "mean": ds["mean"],
        "std": ds["std"],
        "num_classes": ds["num_classes"],
        "created": timestamp(),
        "source": "reta-squeeze",
        "key": entry.name,
    }
    write_cache_entry(entry, model, meta)
    meta["checkpoint_sha256"] = _file_sha256(entry / "model.pt")
    write_cache_entry_meta(entry, meta)
    log.info("teacher trained in %.1f s: test acc %.4f -> %s", seconds, acc, entry)
    return model.eval().requires_grad_(False), meta


def write_cache_entry_meta(entry: Path, meta: dict) -> None:
    atomic_write_json(entry / "meta.json", meta)


def teacher_cfg(cfg: DictConfig) -> DictConfig:
    """``cfg`` as the teacher sees it: ``teacher.seed`` (when set) replaces ``seed``, so one cached teacher serves
    synthesis runs of several seeds (``+teacher.seed=0``); otherwise the run's seed is the teacher's seed."""
    seed = cfg.teacher.get("seed") if "teacher" in cfg else None
    if seed is None:
        return cfg
    sub = cfg.copy()
    with open_dict(sub):
        sub.seed = int(seed)
    return sub


class TeacherLoader:
    """``load(model_cfg)`` → the cached (or freshly squeezed) teacher of that architecture for this dataset.

    ``load.seconds`` is the wall time spent in it and in ``with load.timing():`` blocks (loading, or squeezing a
    teacher not cached yet), so that a set's ``synthesis_seconds`` can leave out teacher training done on first use
    (recorded as ``teacher_seconds``)."""

    def __init__(self, cfg: DictConfig, train, test) -> None:
        self.base, self.train, self.test = teacher_cfg(cfg), train, test
        self.seconds = 0.0

    @contextlib.contextmanager
    def timing(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start

    def __call__(self, model_cfg):
        with self.timing():
            if model_cfg is None:
                return get_teacher(self.base, self.train, self.test)
            sub = self.base.copy()
            with open_dict(sub):
                sub.model = plain(model_cfg)  # replace, not merge: another architecture's kwargs
            return get_teacher(sub, self.train, self.test)

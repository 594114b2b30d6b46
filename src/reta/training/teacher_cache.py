"""The teacher cache: ``get_teacher(cfg)`` returns the frozen teacher of a config — from ``teacher.checkpoint``,
from the
cache under ``${paths.cache_dir}/teachers`` (keyed by dataset + model + recipe + seed), or trained now and cached.

Pretrained teachers (``teacher.pretrained=true``: timm's weights of a tagged name such as ``resnet18.tv_in1k``;
``teacher.pretrained_file=PATH`` or ``teacher.pretrained_dir=DIR``: the same from a local state dict, timm's
``pretrained_cfg_overlay``) are not trained: their accuracy on the dataset's test split is measured once and cached
like a squeezed teacher's, under a key of dataset + model + weight source (the tag, or the file's SHA-256).

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

import torch
from omegaconf import DictConfig, open_dict
from torch import nn

from reta.data.registry import dataset_identity, load_split
from reta.errors import CheckpointError, RetaError
from reta.models import build_model
from reta.training.common import build_logger, build_trainer, eval_device, seed_everything
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
from reta.utils.config import config_digest, output_dir, plain
from reta.utils.groups import group_option
from reta.utils.schema import parse

log = logging.getLogger(__name__)


def recipe_from_cfg(cfg: DictConfig) -> Recipe:
    recipe = parse(Recipe, cfg.recipe, "recipe")
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
    rebuild: a teacher retrained behind the user's back would change every set distilled with it. An entry that a
    concurrent writer is swapping (:func:`reta.utils.io.atomic_directory`) is read again once the swap is over."""
    for attempt in range(40):
        try:
            return _read_cache_entry_once(entry, model)
        except CheckpointError:
            swapping = not entry.is_dir() or any(entry.parent.glob(f".{entry.name}.*-*"))
            if attempt == 39 or not swapping:
                raise
            time.sleep(0.025)
    raise AssertionError("unreachable")


def _read_cache_entry_once(entry: Path, model: nn.Module) -> dict:
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


def pretrained_source(cfg: DictConfig) -> dict | None:
    """``{"kind": "timm", "name": …}`` or ``{"kind": "file", "file": …, "sha256": …}`` when the teacher of ``cfg`` is
    pretrained (``teacher.pretrained`` / ``teacher.pretrained_file``), else None. With ``teacher.pretrained_dir``
    a pretrained teacher's weights are ``<dir>/<timm name>.pth`` (offline clusters: one folder for every teacher)."""
    file = cfg.teacher.get("pretrained_file")
    folder = cfg.teacher.get("pretrained_dir")
    if not file and folder and cfg.teacher.get("pretrained", False):
        name = plain(cfg.model)["name"]
        file = Path(str(folder)).expanduser() / f"{name}.pth"
        if not file.is_file():
            raise RetaError(f"teacher.pretrained_dir: no weight file {file.name} for teacher {name!r} in {folder}")
    if file:
        path = Path(str(file)).expanduser()
        if not path.is_file():
            raise RetaError(f"teacher.pretrained_file {path} does not exist")
        return {"kind": "file", "file": str(path), "sha256": _file_sha256(path)}
    if cfg.teacher.get("pretrained", False):
        return {"kind": "timm", "name": plain(cfg.model)["name"]}
    return None


def pretrained_entry(cfg: DictConfig, source: dict) -> Path:
    """Cache directory of a pretrained teacher: keyed by dataset + model + weight source (never by a machine path)."""
    ds, mc = plain(cfg.dataset), plain(cfg.model)
    payload = {
        "dataset": dataset_identity(ds),
        "model": {"name": mc["name"], "kwargs": mc.get("kwargs") or {}},  # {kwargs: null} and {} are one model
        "weights": {k: v for k, v in source.items() if k != "file"},
    }
    key = config_digest(payload)
    return Path(cfg.paths.cache_dir) / "teachers" / f"{ds['name']}_{mc['name']}_pretrained_{key}"


def _pretrained_teacher(cfg: DictConfig, source: dict, test) -> tuple[nn.Module, dict]:
    ds, mc = plain(cfg.dataset), plain(cfg.model)
    entry = pretrained_entry(cfg, source)
    model = new_model(mc, ds)
    if entry.exists() and not cfg.teacher.get("force", False):
        meta = read_cache_entry(entry, model)
        log.info("pretrained teacher from cache: %s (test acc %.4f)", entry, meta["test_acc"])
        return model.eval().requires_grad_(False), meta
    model = build_model(mc, ds["num_classes"], ds["channels"], ds["image_size"], pretrained=True,
                        pretrained_file=source.get("file"))
    test = test if test is not None else load_split(cfg.dataset, "test", cfg.paths.data_dir)
    acc = evaluate_teacher(model, test, ds, device=eval_device(plain(cfg.trainer)))
    weights = f"timm:{source['name']}" if source["kind"] == "timm" else f"file:{Path(source['file']).name}"
    meta = {
        "name": mc["name"],
        "model": mc,
        "dataset": ds["name"],
        "test_acc": acc,
        "mean": ds["mean"],
        "std": ds["std"],
        "num_classes": ds["num_classes"],
        "created": timestamp(),
        "source": "pretrained",
        "weights": weights,
        "weights_sha256": source.get("sha256"),
        "key": entry.name,
    }
    store_entry(entry, model, meta)
    log.info("pretrained teacher %s: test acc %.4f -> %s", weights, acc, entry)
    return model.eval().requires_grad_(False), meta


def get_teacher(cfg: DictConfig, train=None, test=None) -> tuple[nn.Module, dict]:
    """The frozen teacher of ``cfg`` (eval mode) and its meta: from ``teacher.checkpoint``, pretrained weights
    (``teacher.pretrained`` / ``teacher.pretrained_file`` / ``teacher.pretrained_dir``, accuracy measured once and
    cached), the cache, or trained now."""
    ds, mc = plain(cfg.dataset), plain(cfg.model)
    ckpt = cfg.teacher.get("checkpoint")
    source = None if ckpt else pretrained_source(cfg)
    if source is not None:
        return _pretrained_teacher(cfg, source, test)
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
            "test_acc": evaluate_teacher(model, test, ds, device=eval_device(plain(cfg.trainer))),
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

    seconds = fit_teacher(model, train, ds, recipe, int(cfg.seed), trainer_factory,
                          bool(cfg.get("channels_last", False)))
    model.to(memory_format=torch.contiguous_format)
    acc = evaluate_teacher(model, test, ds, device=eval_device(plain(cfg.trainer)))
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
    store_entry(entry, model, meta)
    log.info("teacher trained in %.1f s: test acc %.4f -> %s", seconds, acc, entry)
    return model.eval().requires_grad_(False), meta


def store_entry(entry: Path, model: nn.Module, meta: dict) -> None:
    """Write a cache entry (weights + meta with the weights' sha256, recorded before the atomic rename)."""
    write_cache_entry(entry, model, meta, digest=_file_sha256)


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
            return get_teacher(entry_teacher_cfg(self.base, model_cfg), self.train, self.test)


#: keys of a teacher-list entry (``method.teachers``) that say where its weights come from, not what it is
TEACHER_WEIGHT_KEYS = ("pretrained", "pretrained_file", "checkpoint")


def _same_model(a: dict, b: dict) -> bool:
    return a.get("name") == b.get("name") and (a.get("kwargs") or {}) == (b.get("kwargs") or {})


def entry_teacher_cfg(base: DictConfig, entry) -> DictConfig:
    """``base`` with the model of a teacher-list entry. The entry's ``pretrained`` / ``pretrained_file`` /
    ``checkpoint`` become ``teacher.*``; a missing ``pretrained`` inherits the run's, and the run's weight files
    (``teacher.checkpoint`` / ``teacher.pretrained_file``) carry over only to an entry of the run's own model."""
    entry = dict(plain(entry))
    model = {k: v for k, v in entry.items() if k not in TEACHER_WEIGHT_KEYS}
    same = _same_model(model, plain(base.model))
    sub = base.copy()
    with open_dict(sub):
        sub.model = model  # replace, not merge: another architecture's kwargs
        sub.teacher.pretrained = bool(entry.get("pretrained", base.teacher.get("pretrained", False)))
        for key in ("pretrained_file", "checkpoint"):
            sub.teacher[key] = entry.get(key, base.teacher.get(key) if same else None)
    return sub


def _model_label(model_cfg: dict, run_model: bool = False) -> str:
    """A teacher's label: for the run's own ``model``, the group choice when Hydra runs the job (``convnet_d3_w32``);
    otherwise ``name(k=v,…)``."""
    if run_model:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized() and HydraConfig.get().runtime.choices.get("model"):
            return str(HydraConfig.get().runtime.choices.get("model"))
    kwargs = model_cfg.get("kwargs") or {}
    return (
        f"{model_cfg['name']}({','.join(f'{k}={v}' for k, v in sorted(kwargs.items()))})" if kwargs
        else str(model_cfg["name"])
    )


def teacher_specs(cfg, teachers: list | None, where: str = "method.teachers") -> list[tuple[str, dict | None]]:
    """``(label, model config)`` per teacher; ``None`` = the run's ``model`` (the squeeze teacher). ``where`` names
    the list in errors (``protocol.committee.teachers`` for a labelling committee)."""
    if not teachers:
        return [(_model_label(plain(cfg.model), run_model=True), None)]
    specs = []
    for entry in plain(teachers):
        if isinstance(entry, str):  # an option of the `model` group, composed through Hydra
            specs.append((entry, group_option("model", entry, where)))
        elif isinstance(entry, dict) and "name" in entry:
            model_cfg = {k: v for k, v in entry.items() if k != "label"}
            specs.append((str(entry.get("label") or _model_label(model_cfg)), model_cfg))
        else:
            raise RetaError(f"{where} entries are model config names or {{name, kwargs}} maps, got {entry!r}")
    return specs

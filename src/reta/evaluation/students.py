"""The student protocols (``protocol=kd``, ``protocol=hard``): a fresh student trained on the distilled set and on a
random real subset of the same IPC, under the identical protocol, once per seed (docs/methods.md §5.3). The protocol
declares where the labels come from (``labels: teacher`` = the teacher's soft labels, KD; ``labels: hard``)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from reta.data.base import ImageDataset
from reta.data.expansion import training_view
from reta.data.holdout import split_holdout
from reta.data.registry import load_split, sample_per_class
from reta.errors import RetaError
from reta.evaluation import protocol_values
from reta.evaluation.addons import attach_summaries, build_addons, enabled_addons, score_student
from reta.evaluation.full_data import full_data_key, full_data_run
from reta.evaluation.metrics import metrics_record
from reta.evaluation.sets import EvalInputs
from reta.evaluation.student_cache import cached_run
from reta.training.committee import committee_specs, committee_teacher
from reta.training.common import build_logger, build_trainer, configure_data, seed_everything, set_threads
from reta.training.soft_labels import ensure_relabelled, stored_loader
from reta.training.student import Protocol, StudentModule, student_loader
from reta.training.teacher import new_model
from reta.training.teacher_cache import get_teacher
from reta.utils.config import output_dir, plain

log = logging.getLogger(__name__)


def train_student(
    images: torch.Tensor,
    labels: torch.Tensor,
    protocol: Protocol,
    student_cfg: Mapping,
    dataset_cfg: Mapping,
    test: ImageDataset,
    seed: int,
    teacher: nn.Module | None,
    trainer_cfg: Mapping,
    logger_cfg: Mapping | None,
    out_dir: str,
    run_name: str,
    progress_bar: bool,
    channels_last: bool = False,
    after_fit: Callable[[nn.Module], dict] | None = None,
    init_state: Mapping | None = None,
) -> dict:
    """Train one fresh student on ``images`` (pixel space [0, 1]) and return its accuracies and wall time, plus what
    ``after_fit(model)`` adds (the student add-ons' scores, :mod:`reta.evaluation.addons`); ``init_state``: start
    from these weights instead (a continual step that continues the previous step's student)."""
    if protocol.soft_labels == "stored":  # FKD-style: write (or reuse) this run's views + logits, then replay them
        store = ensure_relabelled(Path(out_dir) / "soft_labels" / run_name, images, labels, protocol, teacher,
                                  dataset_cfg["mean"], dataset_cfg["std"], seed)
        loader = stored_loader(store, images, labels, protocol, teacher, seed)
    else:
        loader = student_loader(images, labels, protocol.batch_size, seed)
    seed_everything(seed)
    model = new_model(student_cfg, dataset_cfg)
    if init_state is not None:
        model.load_state_dict(init_state)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    module = StudentModule(
        model, protocol, dataset_cfg["mean"], dataset_cfg["std"], len(loader), seed, test_set=test, teacher=teacher,
        channels_last=channels_last,
    )
    trainer = build_trainer(
        trainer_cfg, protocol.epochs, build_logger(logger_cfg, out_dir, run_name), progress_bar, out_dir
    )
    start = time.perf_counter()
    trainer.fit(module, loader)
    seconds = time.perf_counter() - start
    accs = [a for _, a in module.history]
    extra = after_fit(module.model) if after_fit is not None else {}
    return {"acc_last": accs[-1], "acc_best": max(accs), "seconds": seconds, "history": module.history, **extra}


def evaluate(cfg: DictConfig, inputs: EvalInputs) -> dict:
    """The evaluator of ``protocol=kd`` and ``protocol=hard`` (:mod:`reta.evaluation`): students on the random real
    subset (unless ``baseline=false``) and on the distilled set, one per seed."""
    protocol = Protocol.from_cfg(protocol_values(cfg.protocol))
    if not cfg.get("baseline", True) and inputs.distilled is None and not cfg.full_data.enabled:
        raise RetaError("nothing to evaluate: baseline=false, full_data.enabled=false and no distilled=DIR given")
    set_threads(cfg.get("num_threads"))
    configure_data(cfg)
    ds_cfg, student_cfg = plain(cfg.dataset), plain(cfg.student)
    full_train = load_split(cfg.dataset, "train", cfg.paths.data_dir)
    test = load_split(cfg.dataset, "test", cfg.paths.data_dir)
    teacher, teacher_meta = labelling_teacher(cfg, protocol, full_train, test)
    # held-out split: random subsets come from the rest, students are measured on the held-out images, not test
    train, held_out = split_holdout(full_train, inputs.holdout)
    if held_out is not None:
        test = held_out
    common = student_kwargs(cfg, protocol, test, teacher)
    addons = build_addons(cfg, test, ds_cfg, cfg.paths.cache_dir)  # every student is also scored by these
    if addons:
        common["after_fit"] = lambda model: score_student(addons, model)
    eval_split = f"holdout{inputs.holdout}" if inputs.holdout else "test"
    sets: dict[str, list[dict]] = {}
    if cfg.get("baseline", True):
        for seed in inputs.seeds:
            def fit(seed: int = seed) -> dict:
                idx = sample_per_class(train.targets, ds_cfg["num_classes"], inputs.ipc, seed)
                return train_student(train.gather(idx), train.targets[idx], seed=seed, run_name=f"random_seed{seed}",
                                     **common)

            key = random_student_key(cfg, protocol, inputs.ipc, seed, eval_split, teacher_meta)
            r = cached_run(cfg.paths.cache_dir, "random_students", key, fit, cfg.baseline_cache)
            sets.setdefault("random", []).append(r)
            log.info("random seed %d: acc %.4f", seed, r["acc_last"])
    if cfg.full_data.enabled:  # sets.full: the same student on the whole training split, cached per recipe
        key = full_data_key(ds_cfg, student_cfg, protocol, inputs.seeds[0], eval_split, teacher_identity(teacher_meta))
        sets["full"] = [full_data_run(train, protocol, cfg.full_data.epochs, inputs.seeds[0], cfg.paths.cache_dir,
                                      key, lambda im, lb, **kw: train_student(im, lb, **{**common, "after_fit": None,
                                                                                        **kw}))]
    distilled = inputs.distilled
    if distilled is not None:
        # stored images → training images (IDM mosaics expand ×4; the random baseline keeps the stored IPC)
        d_images, d_labels = training_view(distilled.images, distilled.labels, distilled.meta)
        own = {**common, "protocol": set_protocol(protocol, distilled.meta)}
        for seed in inputs.seeds:
            r = train_student(d_images, d_labels, seed=seed, run_name=f"distilled_seed{seed}", **own)
            sets.setdefault("distilled", []).append(r)
            log.info("distilled seed %d: acc %.4f", seed, r["acc_last"])
    return attach_summaries(metrics_record(
        cfg, inputs, sets,
        protocol=protocol.name,
        protocol_config=dataclasses.asdict(protocol),
        student=student_cfg["name"],
        student_config=student_cfg,
        teacher=teacher_record(teacher_meta),
        expansion=distilled.meta.get("expansion", "none") if distilled is not None else "none",
        eval_split=eval_split,
        **({"set_lr": own["protocol"].lr} if distilled is not None and protocol.lr_source == "set" else {}),
    ), sets, addons)


def labelling_teacher(cfg: DictConfig, protocol: Protocol, train, test) -> tuple[nn.Module | None, dict]:
    """The module that labels the KD views and its record: none (hard labels), the run's teacher, or the committee of
    ``protocol.committee`` (:func:`reta.training.committee.committee_teacher`)."""
    if protocol.labels != "teacher":
        return None, {"name": None, "test_acc": None}
    if protocol.committee is not None:
        return committee_teacher(cfg, protocol.committee, train, test)
    return get_teacher(cfg, train, test)


def random_student_key(cfg: DictConfig, protocol: Protocol, ipc: int, seed: int, eval_split: str,
                       teacher_meta: dict) -> dict:
    """Everything the random subset's student of ``seed`` depends on (:mod:`reta.evaluation.student_cache`): the
    full-data key's dataset, student, protocol, seed and split, plus the IPC, the labelling teacher's identity (its
    cache entry or checkpoint digest), the trainer (device, precision), the memory format and the enabled add-ons."""
    return {**full_data_key(plain(cfg.dataset), plain(cfg.student), protocol, seed, eval_split,
                            teacher_identity(teacher_meta)),
            "ipc": int(ipc), "trainer": plain(cfg.trainer), "channels_last": bool(cfg.get("channels_last", False)),
            "addons": enabled_addons(cfg)}


def teacher_identity(meta: dict) -> dict | None:
    """The labelling teacher in a student cache key: its name and cache entry (or checkpoint digest), or the
    committee's teachers' entries and weights; None without a teacher (hard labels)."""
    if meta.get("name") is None:
        return None
    return {k: meta.get(k) for k in ("name", "key", "checkpoint_sha256", "test_acc", "committee", "keys")}


def teacher_record(meta: dict) -> dict:
    """The ``teacher`` entry of ``metrics.json`` (with the committee's teachers, priors and weights when one labels)."""
    record = {"name": meta.get("name"), "test_acc": meta.get("test_acc")}
    if meta.get("committee") is not None:
        record["committee"] = meta["committee"]
    return record


def check_protocol(cfg: DictConfig, protocol: Protocol) -> None:
    """No-data checks of the student protocol shared by the evaluators that train students: a labelling committee's
    teachers must be models of the ``model`` group or ``{name, kwargs}`` maps; with ``lr_source: set`` the
    distilled set's ``meta.json`` must record its learning rate."""
    if protocol.committee is not None:
        committee_specs(cfg, protocol.committee)
    if protocol.lr_source == "set" and cfg.get("distilled"):
        meta = Path(str(cfg.distilled)) / "meta.json"
        if meta.is_file():  # a missing set is the stage's own error
            set_protocol(protocol, json.loads(meta.read_text()))


def set_protocol(protocol: Protocol, meta: Mapping) -> Protocol:
    """The protocol a distilled set's students train under: with ``lr_source: set`` the learning rate the set records
    (MTT's learnt α, ``syn_lr``; GeorgeCazenavette/mtt-distillation ``distill.py`` evaluates every synthetic set with
    the current ``syn_lr``), else ``protocol`` itself. The random subset always keeps the protocol's ``lr``."""
    if protocol.lr_source != "set":
        return protocol
    lr = meta.get("syn_lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise RetaError(f"protocol.lr_source=set: the distilled set records no positive learning rate (meta.json "
                        f"syn_lr = {lr!r}); evaluate it with protocol.lr_source=protocol")
    return dataclasses.replace(protocol, lr=float(lr))


def check_settings(cfg: DictConfig) -> None:
    """The evaluator's own no-data checks (run in the stage's preflight): the protocol's values (a labelling
    committee's teachers included) and ``full_data.epochs``."""
    check_protocol(cfg, Protocol.from_cfg(protocol_values(cfg.protocol)))
    epochs = cfg.full_data.epochs
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0):
        raise RetaError(f"full_data.epochs must be a positive integer or null, got {epochs}")


evaluate.preflight = check_settings


def student_kwargs(cfg: DictConfig, protocol: Protocol, test: ImageDataset, teacher: nn.Module | None) -> dict:
    """The :func:`train_student` arguments every student of one evaluation shares (all but images, labels, seed and
    run name)."""
    return dict(
        protocol=protocol, student_cfg=plain(cfg.student), dataset_cfg=plain(cfg.dataset), test=test, teacher=teacher,
        trainer_cfg=plain(cfg.trainer), logger_cfg=plain(cfg.logger), out_dir=str(output_dir(cfg)),
        progress_bar=bool(cfg.progress_bar), channels_last=bool(cfg.get("channels_last", False)),
    )

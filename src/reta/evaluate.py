"""Evaluation stage as plain functions: students on a distilled set and on a random real subset of the same IPC,
under the identical protocol, once per seed (docs/architecture.md "Evaluation" contract, docs/methods.md §5.3)."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from reta.data.base import ImageDataset
from reta.data.distilled import DistilledSet, load_distilled, save_distilled
from reta.data.expansion import training_view
from reta.data.holdout import check_holdout, split_holdout
from reta.data.registry import load_split, sample_per_class
from reta.errors import RetaError
from reta.training.common import build_logger, build_trainer, configure_data, seed_everything, set_threads
from reta.training.soft_labels import ensure_relabelled, stored_loader
from reta.training.student import Protocol, StudentModule, student_loader
from reta.training.teacher import new_model
from reta.training.teacher_cache import get_teacher
from reta.utils.config import dataclass_from, output_dir, plain, planned_output_dir, require_positive_int
from reta.utils.io import atomic_write_json
from reta.utils.outputs import check_writable_cache, check_writable_dir

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
) -> dict:
    """Train one fresh student on ``images`` (pixel space [0, 1]) and return its accuracies and wall time."""
    if protocol.soft_labels == "stored":  # FKD-style: write (or reuse) this run's views + logits, then replay them
        store = ensure_relabelled(Path(out_dir) / "soft_labels" / run_name, images, labels, protocol, teacher,
                                  dataset_cfg["mean"], dataset_cfg["std"], seed)
        loader = stored_loader(store, images, labels, protocol, teacher, seed)
    else:
        loader = student_loader(images, labels, protocol.batch_size, seed)
    seed_everything(seed)
    model = new_model(student_cfg, dataset_cfg)
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
    return {"acc_last": accs[-1], "acc_best": max(accs), "seconds": seconds, "history": module.history}


def summarize(runs: list[dict]) -> dict:
    last = [r["acc_last"] for r in runs]
    return {
        "acc_last": last,
        "acc_best": [r["acc_best"] for r in runs],
        "acc_mean": statistics.fmean(last),
        "acc_std": statistics.pstdev(last) if len(last) > 1 else 0.0,
        "seconds": [round(r["seconds"], 2) for r in runs],
    }


def check_compatible(ds: DistilledSet, dataset_cfg: Mapping, source: str) -> None:
    """The distilled set must belong to the configured dataset (name, classes, image shape)."""
    expect = [dataset_cfg["channels"], dataset_cfg["image_size"], dataset_cfg["image_size"]]
    if ds.meta.get("dataset") != dataset_cfg["name"]:
        raise RetaError(
            f"distilled set {source} is for dataset {ds.meta.get('dataset')!r}, config says {dataset_cfg['name']!r}"
        )
    if ds.num_classes != dataset_cfg["num_classes"] or list(ds.images.shape[1:]) != expect:
        raise RetaError(
            f"distilled set {source}: {ds.num_classes} classes of {list(ds.images.shape[1:])}, "
            f"dataset {dataset_cfg['name']} has {dataset_cfg['num_classes']} of {expect}"
        )


def preflight(cfg: DictConfig, out: Path) -> None:
    """Checks that need no data and write nothing (before Hydra's run dir, :class:`reta.cli.common.Preflight`):
    ``ipc``, ``seeds``, that ``distilled`` is a directory, that ``out`` can be written and holds no finished
    ``metrics.json`` (replaced only with ``overwrite=true``, or ``resume=true`` in ``reta-run``)."""
    require_positive_int(cfg.ipc, "ipc")
    if not list(cfg.get("seeds") or []):
        raise RetaError("seeds must be a non-empty list, e.g. seeds=[0,1,2]")
    seeds = list(cfg.seeds)
    if len(set(seeds)) != len(seeds):  # a repeated seed is the same student again: n would overstate, std understate
        raise RetaError(f"seeds must be distinct, got {seeds}")
    if cfg.get("distilled") and not Path(str(cfg.distilled)).is_dir():
        raise RetaError(f"distilled set not found: {cfg.distilled} is not a directory")
    check_writable_dir(out)
    check_writable_cache(cfg)
    if (out / "metrics.json").is_file() and not (cfg.get("overwrite", False) or cfg.get("resume", False)):
        raise RetaError(f"paths.output_dir {out} already holds a finished evaluation (metrics.json); pass "
                        "overwrite=true to replace it, or choose another paths.output_dir")


def run(cfg: DictConfig) -> dict:
    """Evaluate; writes ``metrics.json`` in the output dir and returns the same dict."""
    preflight(cfg, planned_output_dir(cfg))
    if (cfg.get("eval_pool") or {}).get("students"):
        return run_pool(cfg)
    if cfg.protocol.get("name") == "linear_probe":
        return run_linear_probe(cfg)
    set_threads(cfg.get("num_threads"))
    configure_data(cfg)
    ipc = require_positive_int(cfg.ipc, "ipc")
    seeds = [int(s) for s in (cfg.seeds or [])]
    if not seeds:
        raise RetaError("seeds must be a non-empty list, e.g. seeds=[0,1,2]")
    holdout = check_holdout(cfg.get("holdout_per_class", 0))
    protocol = Protocol.from_cfg(plain(cfg.protocol))
    ds_cfg, student_cfg = plain(cfg.dataset), plain(cfg.student)
    distilled = None
    if cfg.get("distilled"):
        distilled = load_distilled(cfg.distilled)
        check_compatible(distilled, ds_cfg, str(cfg.distilled))
        meant = (distilled.meta.get("method_config") or {}).get("eval_protocol")
        if meant and meant != protocol.name:
            log.warning("the %s set was made for protocol=%s, evaluating with protocol=%s",
                        distilled.meta.get("method"), meant, protocol.name)
        made_with = int(distilled.meta.get("holdout_per_class") or 0)
        if holdout and made_with != holdout:
            raise RetaError(f"holdout_per_class={holdout} but the distilled set {cfg.distilled} was made with "
                            f"holdout_per_class={made_with}: it may contain held-out images; distil it with "
                            f"holdout_per_class={holdout}")
        if distilled.ipc != ipc:
            log.warning("ipc=%d overridden by the distilled set's ipc=%d", ipc, distilled.ipc)
            ipc = distilled.ipc
    full_train = load_split(cfg.dataset, "train", cfg.paths.data_dir)
    test = load_split(cfg.dataset, "test", cfg.paths.data_dir)
    teacher, teacher_meta = None, {"name": None, "test_acc": None}
    if protocol.name == "kd":
        teacher, teacher_meta = get_teacher(cfg, full_train, test)
    # held-out split: random subsets come from the rest, students are measured on the held-out images, not test
    train, held_out = split_holdout(full_train, holdout)
    if held_out is not None:
        test = held_out
    out = output_dir(cfg)
    common = dict(
        protocol=protocol,
        student_cfg=student_cfg,
        dataset_cfg=ds_cfg,
        test=test,
        teacher=teacher,
        trainer_cfg=plain(cfg.trainer),
        logger_cfg=plain(cfg.logger),
        out_dir=str(out),
        progress_bar=bool(cfg.progress_bar),
        channels_last=bool(cfg.get("channels_last", False)),
    )
    sets: dict[str, list[dict]] = {}
    if cfg.get("baseline", True):
        for seed in seeds:
            idx = sample_per_class(train.targets, ds_cfg["num_classes"], ipc, seed)
            images, labels = train.gather(idx), train.targets[idx]
            sets.setdefault("random", []).append(
                train_student(images, labels, seed=seed, run_name=f"random_seed{seed}", **common)
            )
            log.info("random seed %d: acc %.4f", seed, sets["random"][-1]["acc_last"])
    if distilled is not None:
        # stored images → training images (IDM mosaics expand ×4; the random baseline keeps the stored IPC)
        d_images, d_labels = training_view(distilled.images, distilled.labels, distilled.meta)
        for seed in seeds:
            r = train_student(d_images, d_labels, seed=seed, run_name=f"distilled_seed{seed}", **common)
            sets.setdefault("distilled", []).append(r)
            log.info("distilled seed %d: acc %.4f", seed, r["acc_last"])
    if not sets:
        raise RetaError("nothing to evaluate: baseline=false and no distilled=DIR given")
    metrics = {
        "dataset": ds_cfg["name"],
        "ipc": ipc,
        "protocol": protocol.name,
        "protocol_config": protocol.__dict__,
        "student": student_cfg["name"],
        "student_config": student_cfg,
        "teacher": {"name": teacher_meta.get("name"), "test_acc": teacher_meta.get("test_acc")},
        "seeds": seeds,
        "distilled": str(cfg.distilled) if distilled is not None else None,
        "method": distilled.meta.get("method") if distilled is not None else "random",
        "label": cfg.get("label"),
        "expansion": distilled.meta.get("expansion", "none") if distilled is not None else "none",
        "eval_split": f"holdout{holdout}" if holdout else "test",
        "sets": {name: summarize(runs) for name, runs in sets.items()},
    }
    atomic_write_json(out / "metrics.json", metrics)
    if cfg.get("save_random_subset", False):
        idx = sample_per_class(train.targets, ds_cfg["num_classes"], ipc, seeds[0])
        meta = {"dataset": ds_cfg["name"], "num_classes": ds_cfg["num_classes"], "ipc": ipc, "mean": ds_cfg["mean"],
                "std": ds_cfg["std"], "method": "random", "seed": seeds[0]}
        save_distilled(
            out / "random_subset", train.gather(idx), train.targets[idx], meta, class_names=train.class_names
        )
    print(format_metrics(metrics))
    print(f"metrics: {out / 'metrics.json'}")
    return metrics


def run_linear_probe(cfg: DictConfig) -> dict:
    """``protocol=linear_probe``: fresh linear heads on the frozen ``backbone`` trained on the distilled set and on a
    random real subset (one per seed), the backbone's golden full-data probe as ``sets.full``, and with
    ``protocol.inherit=true`` the set's own backbone's golden head deployed here through a learnt projector
    (:mod:`reta.training.probe`). A set made for another backbone is refused unless ``cross_backbone``/``inherit``."""
    from dataclasses import asdict

    from reta.training.backbone import BackboneSpec, expected_key, get_backbone
    from reta.training.inherit_source import check_source_key, source_backbone_spec
    from reta.training.probe import (
        GoldenSpec,
        ProbeSpec,
        golden_head,
        holdout_split,
        inherited_accuracy,
        probe_accuracy,
    )

    set_threads(cfg.get("num_threads"))
    ipc = require_positive_int(cfg.ipc, "ipc")
    seeds = [int(s) for s in (cfg.seeds or [])]
    if not seeds:
        raise RetaError("seeds must be a non-empty list, e.g. seeds=[0,1,2]")
    spec = ProbeSpec.from_cfg(cfg.protocol)
    bspec = BackboneSpec.from_cfg(cfg.backbone)
    gspec = dataclass_from(GoldenSpec, bspec.probe, "backbone.probe")
    ds_cfg = plain(cfg.dataset)
    distilled, made_for = None, {}
    if cfg.get("distilled"):
        distilled = load_distilled(cfg.distilled)
        check_compatible(distilled, ds_cfg, str(cfg.distilled))
        made_for = distilled.meta.get("backbone") or {}
        ipc = distilled.ipc
        want = expected_key(cfg, bspec)
        other = not made_for.get("key") or (want is not None and made_for["key"] != want)
        if other and not (spec.cross_backbone or spec.inherit):
            raise RetaError(f"distilled set {cfg.distilled} was made for backbone "
                            f"{made_for.get('name', 'none (method ' + str(distilled.meta.get('method')) + ')')} "
                            f"{made_for.get('key', '')}, this probe uses backbone {bspec.name} {want or ''}; pass "
                            f"backbone={made_for.get('name', '...')} or protocol.cross_backbone=true")
        if spec.inherit and not made_for.get("name"):
            raise RetaError(f"protocol.inherit=true needs a set made for a frozen backbone; "
                            f"{cfg.distilled} records none")
        if spec.inherit:
            source_spec = source_backbone_spec(cfg, made_for, f"distilled set {cfg.distilled}")
    elif spec.inherit:
        raise RetaError("protocol.inherit=true needs distilled=DIR (the set whose backbone's classifier is inherited)")
    train = load_split(cfg.dataset, "train", cfg.paths.data_dir)
    test = load_split(cfg.dataset, "test", cfg.paths.data_dir)
    backbone = get_backbone(cfg, train, test, bspec)
    if distilled is not None and made_for.get("key") != backbone.key and not (spec.cross_backbone or spec.inherit):
        raise RetaError(f"distilled set {cfg.distilled} was made for backbone {made_for.get('name')} "
                        f"{made_for.get('key')}, this probe uses {backbone.key}; pass protocol.cross_backbone=true")
    C, trainer_cfg = int(ds_cfg["num_classes"]), plain(cfg.trainer)
    _, golden = golden_head(backbone, train, test, C, gspec, trainer_cfg)
    full, all_train, all_test = golden["test_acc"], train, test
    if spec.eval_split == "holdout":  # choose settings: score on held-out training images, draw subsets from the rest
        train, test = holdout_split(train, gspec)
        full = golden["holdout_acc"]
    sets: dict[str, list[dict]] = {"full": [{"acc_last": full, "acc_best": full, "seconds": golden["seconds"]}]}
    todo = []
    if cfg.get("baseline", True):
        for seed in seeds:
            idx = sample_per_class(train.targets, C, ipc, seed)
            todo.append(("random", seed, train.gather(idx), train.targets[idx].clone()))
    if distilled is not None:
        todo += [("distilled", seed, distilled.images.float(), distilled.labels) for seed in seeds]
    for name, seed, images, labels in todo:
        sets.setdefault(name, []).append(probe_accuracy(backbone, images, labels, test, C, spec, seed, trainer_cfg))
        log.info("%s seed %d: probe acc %.4f", name, seed, sets[name][-1]["acc_last"])
    inherited = None
    if spec.inherit:
        source = get_backbone(cfg, all_train, all_test, source_spec)  # the user's config, never the set's meta
        check_source_key(source.key, made_for, str(cfg.distilled))
        head_a, inherited = golden_head(source, all_train, all_test, C,
                                        dataclass_from(GoldenSpec, source.meta["config"]["probe"], "backbone.probe"),
                                        trainer_cfg)
        for name, seed, images, _ in todo:
            r = inherited_accuracy(source, head_a, backbone, images, test, spec, seed, trainer_cfg)
            sets.setdefault(f"{name}_inherited", []).append(r)
    metrics = {
        "dataset": ds_cfg["name"],
        "ipc": ipc,
        "protocol": "linear_probe",
        "protocol_config": asdict(spec),
        "student": f"linear_probe@{backbone.meta['name']}",
        "student_config": {"backbone": backbone.meta},
        "teacher": {"name": backbone.meta["name"], "test_acc": full},
        "eval_split": spec.eval_split,
        "seeds": seeds,
        "distilled": str(cfg.distilled) if distilled is not None else None,
        "method": distilled.meta.get("method") if distilled is not None else "random",
        "label": cfg.get("label"),
        "expansion": "none",
        "backbone": {"name": backbone.meta["name"], "key": backbone.key, "made_for": made_for.get("name"),
                     "made_for_key": made_for.get("key")},
        "golden": {k: v for k, v in golden.items() if k != "holdout_history"},
        "inherited_from": (None if inherited is None
                           else {k: inherited[k] for k in ("backbone", "backbone_key", "test_acc")}),
        "sets": {name: summarize(runs) for name, runs in sets.items()},
    }
    out = output_dir(cfg)
    atomic_write_json(out / "metrics.json", metrics)
    print(format_metrics(metrics))
    print(f"metrics: {out / 'metrics.json'}")
    return metrics


def format_metrics(m: dict) -> str:
    lines = [f"{m['dataset']} IPC {m['ipc']}, protocol {m['protocol']}, student {m['student']}, seeds {m['seeds']}, "
             f"accuracy on {m.get('eval_split', 'test')}"]
    for name, s in m["sets"].items():
        lines.append(
            f"  {name:<10} {100 * s['acc_mean']:6.2f} ± {100 * s['acc_std']:.2f} %   "
            f"(last epoch; best {', '.join(f'{100 * a:.2f}' for a in s['acc_best'])})"
        )
    return "\n".join(lines)


def run_pool(cfg: DictConfig) -> dict:
    """Evaluate with every student of ``eval_pool.students`` (cross-architecture, docs/methods.md / paper Table 2):
    one :func:`run` per student under ``<output_dir>/cross_arch/<label>/``, plus ``cross_arch.md`` / ``.json``."""
    import copy

    from omegaconf import open_dict

    from reta.reporting.tables import collect, to_markdown

    students = plain(cfg.eval_pool.students)
    results = {}
    for label, student in students.items():
        sub = copy.deepcopy(cfg)
        with open_dict(sub):
            sub.student = student  # assignment replaces the node (a merge would mix kwargs of two architectures)
            sub.eval_pool.students = None
            sub.output_subdir = f"cross_arch/{label}"
        results[label] = run(sub)
    out = output_dir(cfg)
    md = to_markdown(collect(sorted(out.glob("cross_arch/*/metrics.json"))))
    from reta.utils.io import atomic_write_text

    atomic_write_text(out / "cross_arch.md", md)
    atomic_write_json(out / "cross_arch.json", results)
    print(md)
    return {"students": list(results), "results": results}

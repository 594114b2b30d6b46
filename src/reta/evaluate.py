"""Evaluation stage as plain functions: the one "load and check the set" step
(:func:`reta.evaluation.sets.load_inputs`), then the protocol's evaluator (``protocol.evaluator``, a Hydra
``_target_``: :mod:`reta.evaluation`), which trains students or probes on a distilled set and on a random real subset
of the same IPC under the identical protocol, once per seed (docs/architecture.md "Evaluation" contract,
docs/methods.md §5.3). The stage writes what the evaluator returns as ``metrics.json``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from reta.data.distilled import save_distilled
from reta.data.holdout import split_holdout
from reta.data.registry import load_split, sample_per_class
from reta.errors import RetaError
from reta.evaluation import evaluator_function, evaluator_preflight, protocol_values
from reta.evaluation.addons import check_addons
from reta.evaluation.metrics import format_metrics
from reta.evaluation.sets import load_inputs
from reta.evaluation.student_cache import canonical, check_cache_mode
from reta.utils.config import output_dir, plain, planned_output_dir, require_positive_int
from reta.utils.io import atomic_write_json, atomic_write_text
from reta.utils.outputs import check_writable_cache, check_writable_dir

log = logging.getLogger(__name__)


def preflight(cfg: DictConfig, out: Path) -> None:
    """Checks that need no data and write nothing (before Hydra's run dir, :class:`reta.cli.common.Preflight`):
    ``ipc``, ``seeds``, the protocol's evaluator (and the evaluator's own ``preflight``), the student add-ons, that
    ``distilled`` is a directory, that ``out`` can be written and holds no finished ``metrics.json`` (replaced only
    with ``overwrite=true``, or ``resume=true`` in ``reta-run``)."""
    require_positive_int(cfg.ipc, "ipc")
    if not list(cfg.get("seeds") or []):
        raise RetaError("seeds must be a non-empty list, e.g. seeds=[0,1,2]")
    seeds = list(cfg.seeds)
    if len(set(seeds)) != len(seeds):  # a repeated seed is the same student again: n would overstate, std understate
        raise RetaError(f"seeds must be distinct, got {seeds}")
    evaluator = evaluator_function(cfg.protocol)
    if not isinstance(cfg.protocol.get("requires_teacher"), bool):
        raise RetaError("protocol.requires_teacher: missing; a protocol config declares whether it needs the run's "
                        "teacher (true | false)")
    check_addons(cfg)
    check_cache_mode(cfg.get("baseline_cache", True), "baseline_cache")
    check_pool(cfg)
    own_check = evaluator_preflight(evaluator)
    if own_check is not None:
        own_check(cfg)
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
    evaluator = evaluator_function(cfg.protocol)
    inputs = load_inputs(cfg)
    metrics = evaluator(cfg, inputs)
    out = output_dir(cfg)
    atomic_write_json(out / "metrics.json", metrics)
    if cfg.get("save_random_subset", False):
        save_random_subset(cfg, inputs.ipc, inputs.seeds[0], inputs.holdout, out / "random_subset")
    print(format_metrics(metrics))
    print(f"metrics: {out / 'metrics.json'}")
    return metrics


def save_random_subset(cfg: DictConfig, ipc: int, seed: int, holdout: int, path: Path) -> None:
    """The random real subset of the first seed as a distilled set (format v1), e.g. for other tools."""
    ds_cfg = plain(cfg.dataset)
    train, _ = split_holdout(load_split(cfg.dataset, "train", cfg.paths.data_dir), holdout)
    idx = sample_per_class(train.targets, ds_cfg["num_classes"], ipc, seed)
    meta = {"dataset": ds_cfg["name"], "num_classes": ds_cfg["num_classes"], "ipc": ipc, "mean": ds_cfg["mean"],
            "std": ds_cfg["std"], "method": "random", "seed": seed}
    save_distilled(path, train.gather(idx), train.targets[idx], meta, class_names=train.class_names)


#: what a pool entry may hold: the student model (``name``, ``kwargs``) and its own training settings
POOL_ENTRY_KEYS = ("name", "kwargs", "lr_scale", "protocol")


def check_pool(cfg: DictConfig) -> None:
    """Every ``eval_pool.students`` entry holds only :data:`POOL_ENTRY_KEYS`, names a ``name``; its optional
    ``lr_scale`` (a positive number, for a protocol with an ``lr``) and ``protocol`` map (only keys the run's protocol
    has, not ``lr`` beside ``lr_scale``) set that student's own training (per-architecture learning rates as in RDED's
    evaluation; docs/methods.md §5.3); each student's resulting protocol passes the evaluator's own checks."""
    students = plain((cfg.get("eval_pool") or {}).get("students")) or {}
    valid = sorted(protocol_values(cfg.protocol))
    own_check = evaluator_preflight(evaluator_function(cfg.protocol)) if students else None
    for label, entry in students.items():
        where = f"eval_pool.students.{label}"
        if not isinstance(entry, dict) or not entry.get("name"):
            raise RetaError(f"{where}: needs a name, e.g. {{name: resnet18_cifar, kwargs: null}}")
        extra = sorted(set(entry) - set(POOL_ENTRY_KEYS))
        if extra:
            raise RetaError(f"{where}: unknown key(s) {extra}; valid: {', '.join(POOL_ENTRY_KEYS)}")
        own = entry.get("protocol")
        if own is not None and not isinstance(own, dict):
            raise RetaError(f"{where}.protocol: a map of protocol settings, e.g. {{lr: 0.0001}}, got {own!r}")
        unknown = sorted(set(own or {}) - set(valid))
        if unknown:
            raise RetaError(f"{where}.protocol: unknown key(s) {unknown} for protocol {cfg.protocol.name}; "
                            f"valid: {', '.join(valid)}")
        scale = entry.get("lr_scale")
        if scale is not None:
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0 or "lr" not in valid:
                why = "" if "lr" in valid else f" (protocol {cfg.protocol.name} has no lr)"
                raise RetaError(f"{where}.lr_scale: a positive number that multiplies the protocol's lr, got "
                                f"{scale!r}{why}")
            if "lr" in (own or {}):
                raise RetaError(f"{where}: lr_scale and protocol.lr both set the learning rate; keep one")
        if own_check is not None:
            own_check(pool_student_cfg(cfg, label, entry))


def pool_student_cfg(cfg: DictConfig, label: str, entry: dict) -> DictConfig:
    """The run config of one pool student: ``student`` replaced by the entry (a merge would mix the kwargs of two
    architectures), the protocol's ``lr`` multiplied by the entry's ``lr_scale`` and its ``protocol`` settings merged
    over the run's, output under ``cross_arch/<label>``."""
    import copy

    from omegaconf import OmegaConf, open_dict

    entry = dict(entry)
    own_protocol = entry.pop("protocol", None) or {}
    scale = entry.pop("lr_scale", None)
    sub = copy.deepcopy(cfg)
    with open_dict(sub):
        sub.student = entry
        if scale is not None:
            sub.protocol.lr = float(f"{float(sub.protocol.lr) * float(scale):.12g}")  # 1e-3 × 0.1 → 1e-4 exactly
        sub.protocol = OmegaConf.merge(sub.protocol, own_protocol)
        sub.eval_pool.students = None
        sub.output_subdir = f"cross_arch/{label}"
    return sub


def _finished_student(path: Path, cfg: DictConfig, label: str) -> dict:
    """The stored ``metrics.json`` of a pool student, when it is this command's (same student, protocol settings,
    seeds and set; ``cfg`` is the student's own config); a different run in its place is refused rather than mixed
    into the table."""
    m = json.loads(path.read_text())
    want = {"student": cfg.student.name, "protocol": cfg.protocol.name, "seeds": [int(s) for s in cfg.seeds],
            "distilled": str(cfg.distilled) if cfg.get("distilled") else None}
    have = {k: m.get(k) for k in want}
    if "student_config" in m and canonical(m["student_config"]) != canonical(plain(cfg.student)):
        have["student_config"], want["student_config"] = m["student_config"], plain(cfg.student)
    stored, now = canonical(m.get("protocol_config") or {}), canonical(protocol_values(cfg.protocol))
    for k in sorted(set(stored) & set(now)):  # the settings both records have (lr, epochs, committee, …)
        if stored[k] != now[k]:
            have[f"protocol.{k}"], want[f"protocol.{k}"] = stored[k], now[k]
    if have != want:
        raise RetaError(f"resume=true: {path} belongs to another evaluation ({have}), not this one ({want}); "
                        f"remove {path.parent} to train that student again, or choose another paths.output_dir")
    log.info("pool student %s: finished, kept (%s)", label, path)
    return m


def run_pool(cfg: DictConfig) -> dict:
    """Evaluate with every student of ``eval_pool.students`` (cross-architecture, docs/methods.md / paper Table 2):
    one :func:`run` per student under ``<output_dir>/cross_arch/<label>/``, plus ``cross_arch.md`` / ``.json``.
    With ``resume=true`` the students whose ``metrics.json`` is already there are kept, so a pool too long for one
    session runs in pieces."""
    from reta.reporting.tables import collect, to_markdown

    students = plain(cfg.eval_pool.students)
    out = output_dir(cfg)
    results = {}
    for label, entry in students.items():
        sub = pool_student_cfg(cfg, label, entry)
        done = out / "cross_arch" / label / "metrics.json"
        if cfg.get("resume", False) and done.is_file():  # a pool run in pieces: keep the finished students
            results[label] = _finished_student(done, sub, label)
            continue
        results[label] = run(sub)
    md = to_markdown(collect(sorted(out.glob("cross_arch/*/metrics.json"))))
    atomic_write_text(out / "cross_arch.md", md)
    atomic_write_json(out / "cross_arch.json", results)
    print(md)
    return {"students": list(results), "results": results}

"""The linear-probe protocol (``protocol=linear_probe``) of the frozen-backbone family: fresh linear heads on the
frozen ``backbone`` trained on the distilled set and on a random real subset (one per seed), the backbone's golden
full-data probe as ``sets.full``, and with ``protocol.inherit=true`` the set's own backbone's golden head deployed
here through a learnt projector (:mod:`reta.training.probe`; arXiv 2511.16674 §4, arXiv 2602.05391). A set made for
another backbone is refused unless ``cross_backbone``/``inherit``."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from omegaconf import DictConfig

from reta.data.registry import load_split, sample_per_class
from reta.errors import RetaError
from reta.evaluation import protocol_values
from reta.evaluation.metrics import metrics_record
from reta.evaluation.sets import EvalInputs
from reta.training import backbone as backbones  # module attribute: get_backbone looked up at call time
from reta.training.backbone import BackboneSpec, FrozenBackbone, expected_key
from reta.training.common import set_threads
from reta.training.inherit_source import check_source_key, source_backbone_spec
from reta.training.probe import GoldenSpec, ProbeSpec, golden_head, holdout_split, inherited_accuracy, probe_accuracy
from reta.utils.config import plain
from reta.utils.schema import parse

log = logging.getLogger(__name__)


@dataclass
class ProbeRun:
    """One probe fit: set name (``random`` | ``distilled``), seed, images and labels."""

    name: str
    seed: int
    images: torch.Tensor
    labels: torch.Tensor


def check_backbone(cfg: DictConfig, inputs: EvalInputs, spec: ProbeSpec,
                   bspec: BackboneSpec) -> tuple[dict, BackboneSpec | None]:
    """The backbone the set was made for (``meta.backbone``, ``{}`` without a set) and, with ``inherit``, the spec of
    that source backbone from the user's config (:func:`reta.training.inherit_source.source_backbone_spec`, never
    the set's meta); refuses a set made for another backbone unless ``cross_backbone`` or ``inherit``, and
    ``inherit`` without a frozen-backbone set."""
    if inputs.distilled is None:
        if spec.inherit:
            raise RetaError("protocol.inherit=true needs distilled=DIR (the set whose backbone's classifier is "
                            "inherited)")
        return {}, None
    made_for = inputs.distilled.meta.get("backbone") or {}
    want = expected_key(cfg, bspec)
    other = not made_for.get("key") or (want is not None and made_for["key"] != want)
    if other and not (spec.cross_backbone or spec.inherit):
        method = inputs.distilled.meta.get("method")
        raise RetaError(f"distilled set {inputs.source} was made for backbone "
                        f"{made_for.get('name', 'none (method ' + str(method) + ')')} "
                        f"{made_for.get('key', '')}, this probe uses backbone {bspec.name} {want or ''}; pass "
                        f"backbone={made_for.get('name', '...')} or protocol.cross_backbone=true")
    if spec.inherit and not made_for.get("name"):
        raise RetaError(f"protocol.inherit=true needs a set made for a frozen backbone; {inputs.source} records none")
    source_spec = source_backbone_spec(cfg, made_for, f"distilled set {inputs.source}") if spec.inherit else None
    return made_for, source_spec


def probe_runs(cfg: DictConfig, inputs: EvalInputs, train, num_classes: int) -> list[ProbeRun]:
    """The random real subsets (unless ``baseline=false``) and the distilled set, once per seed."""
    runs = []
    if cfg.get("baseline", True):
        for seed in inputs.seeds:
            idx = sample_per_class(train.targets, num_classes, inputs.ipc, seed)
            runs.append(ProbeRun("random", seed, train.gather(idx), train.targets[idx].clone()))
    if inputs.distilled is not None:
        d = inputs.distilled
        runs += [ProbeRun("distilled", seed, d.images.float(), d.labels) for seed in inputs.seeds]
    return runs


def inherit(cfg: DictConfig, runs: list[ProbeRun], made_for: dict, source_spec: BackboneSpec,
            backbone: FrozenBackbone, data: tuple, test, spec: ProbeSpec, sets: dict, where: str) -> dict:
    """Classifier inheritance: the golden head of the set's own backbone, deployed on ``backbone`` through a learnt
    projector, scored per run as ``<name>_inherited``; returns that golden head's record."""
    all_train, all_test = data
    trainer_cfg, num_classes = plain(cfg.trainer), int(cfg.dataset.num_classes)
    source = backbones.get_backbone(cfg, all_train, all_test, source_spec)  # the user's config, never the set's meta
    check_source_key(source.key, made_for, where)
    head, record = golden_head(source, all_train, all_test, num_classes,
                               parse(GoldenSpec, source.meta["config"]["probe"], "backbone.probe"), trainer_cfg)
    for run in runs:
        r = inherited_accuracy(source, head, backbone, run.images, test, spec, run.seed, trainer_cfg)
        sets.setdefault(f"{run.name}_inherited", []).append(r)
    return record


def evaluate(cfg: DictConfig, inputs: EvalInputs) -> dict:
    """The evaluator of ``protocol=linear_probe`` (:mod:`reta.evaluation`)."""
    set_threads(cfg.get("num_threads"))
    spec = ProbeSpec.from_cfg(protocol_values(cfg.protocol))
    bspec = BackboneSpec.from_cfg(cfg.backbone)
    gspec = parse(GoldenSpec, bspec.probe, "backbone.probe")
    made_for, source_spec = check_backbone(cfg, inputs, spec, bspec)
    train = load_split(cfg.dataset, "train", cfg.paths.data_dir)
    test = load_split(cfg.dataset, "test", cfg.paths.data_dir)
    backbone = backbones.get_backbone(cfg, train, test, bspec)
    if inputs.distilled is not None and made_for.get("key") != backbone.key and not (spec.cross_backbone
                                                                                     or spec.inherit):
        raise RetaError(f"distilled set {inputs.source} was made for backbone {made_for.get('name')} "
                        f"{made_for.get('key')}, this probe uses {backbone.key}; pass protocol.cross_backbone=true")
    C, trainer_cfg = int(cfg.dataset.num_classes), plain(cfg.trainer)
    _, golden = golden_head(backbone, train, test, C, gspec, trainer_cfg)
    full, data = golden["test_acc"], (train, test)
    if spec.eval_split == "holdout":  # choose settings: score on held-out training images, draw subsets from the rest
        train, test = holdout_split(train, gspec)
        full = golden["holdout_acc"]
    sets: dict[str, list[dict]] = {"full": [{"acc_last": full, "acc_best": full, "seconds": golden["seconds"]}]}
    runs = probe_runs(cfg, inputs, train, C)
    for run in runs:
        sets.setdefault(run.name, []).append(
            probe_accuracy(backbone, run.images, run.labels, test, C, spec, run.seed, trainer_cfg))
        log.info("%s seed %d: probe acc %.4f", run.name, run.seed, sets[run.name][-1]["acc_last"])
    inherited = (inherit(cfg, runs, made_for, source_spec, backbone, data, test, spec, sets, str(inputs.source))
                 if spec.inherit else None)
    name = backbone.meta["name"]
    return metrics_record(
        cfg, inputs, sets,
        protocol="linear_probe",
        protocol_config=asdict(spec),
        student=f"linear_probe@{name}",
        student_config={"backbone": backbone.meta},
        teacher={"name": name, "label": f"backbone {name} (full-data probe)", "test_acc": full},
        eval_split=spec.eval_split,
        backbone={"name": name, "key": backbone.key, "made_for": made_for.get("name"),
                  "made_for_key": made_for.get("key")},
        golden={k: v for k, v in golden.items() if k != "holdout_history"},
        inherited_from=(None if inherited is None
                        else {k: inherited[k] for k in ("backbone", "backbone_key", "test_acc")}),
    )

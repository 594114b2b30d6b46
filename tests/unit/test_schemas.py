"""The one schema parser (:mod:`reta.utils.schema`) and the YAML as the one source of defaults: every shipped method
config (alone and with every per-dataset file) parses through its family's schema, whose fields have no defaults;
every recipe and the linear-probe protocol set every field of their schema; errors come in one format."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from reta.distill import check_method
from reta.errors import RetaError
from reta.evaluation.continual import ContinualSpec, student_protocol
from reta.evaluation.robustness import RobustnessSpec, check_spec
from reta.synthesis.bn.family import BNMethodConfig
from reta.synthesis.dm.config import DistributionSpec
from reta.synthesis.frozen.family import FrozenSpec
from reta.synthesis.process.config import GradientSpec, TrajectorySpec
from reta.training.experts import ExpertRecipe
from reta.training.probe import ProbeSpec
from reta.training.student import Protocol
from reta.training.teacher import Recipe
from reta.utils.schema import nested_schema, parse

from helpers import CONF_DIR, compose_cfg

METHODS = sorted(p.stem for p in (Path(CONF_DIR) / "method").glob("*.yaml"))
PAPER = sorted(p.stem for p in (Path(CONF_DIR) / "method" / "per_dataset").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (Path(CONF_DIR) / "dataset").glob("*.yaml"))
BASE = ["paths.output_dir=/tmp/reta-schema-test", "ipc=1"]


def _all_fields(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    out = []
    for f in dataclasses.fields(cls):
        out.append((prefix + f.name, f))
        sub = nested_schema(cls, f.name)
        if sub is not None:
            out += _all_fields(sub, f"{prefix}{f.name}.")
    return out


@pytest.mark.parametrize("schema", [BNMethodConfig, DistributionSpec, FrozenSpec, GradientSpec, TrajectorySpec,
                                    ExpertRecipe, Recipe, Protocol, ContinualSpec, RobustnessSpec])
def test_method_recipe_and_student_protocol_schemas_have_no_defaults(schema):
    with_default = [name for name, f in _all_fields(schema)
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
    assert with_default == [], f"{schema.__name__}: defaults belong in the YAML, not the schema: {with_default}"


@pytest.mark.parametrize("method", METHODS)
def test_every_method_config_parses(method):
    cfg = compose_cfg("distill", [*BASE, f"method={method}"])
    check_method(cfg)


@pytest.mark.parametrize("protocol", ["continual", "continual_kd"])
def test_the_continual_protocols_parse(protocol):
    cfg = compose_cfg("evaluate", [*BASE, f"protocol={protocol}"])
    spec, student = student_protocol(cfg)
    assert spec.steps == 5 and student.labels == ("teacher" if protocol == "continual_kd" else "hard")


@pytest.mark.parametrize("robustness", sorted(p.stem for p in (Path(CONF_DIR) / "robustness").glob("*.yaml")))
def test_every_robustness_config_parses(robustness):
    cfg = compose_cfg("evaluate", [*BASE, f"robustness={robustness}"])
    spec = check_spec({k: v for k, v in OmegaConf.to_container(cfg.robustness).items()
                       if k not in ("enabled", "addon")})
    assert len(spec.corruptions) == 15 and spec.severities == [1, 2, 3, 4, 5]


def _paper_cases():
    assert PAPER, "conf/method/per_dataset/ holds the per-dataset method files"
    for name in PAPER:
        for ds in DATASETS:
            if name.endswith(f"_{ds}") and name[: -len(ds) - 1] in METHODS:
                yield name[: -len(ds) - 1], ds


@pytest.mark.parametrize(("method", "dataset"), list(_paper_cases()))
def test_every_per_dataset_method_config_parses_at_its_ipcs(method, dataset):
    cfg = compose_cfg("distill", [*BASE, f"method={method}", f"dataset={dataset}"])
    ipcs = [1, *(int(k) for k in (cfg.method.get("per_ipc") or {}))]
    for ipc in ipcs:
        cfg.ipc = ipc
        check_method(cfg)


@pytest.mark.parametrize(("schema", "group", "where"), [(Recipe, "recipe", "recipe")])
def test_every_config_of_a_group_sets_every_field(schema, group, where):
    for path in sorted((Path(CONF_DIR) / group).glob("*.yaml")):
        values = OmegaConf.to_container(OmegaConf.load(path))
        values.pop("defaults", None)
        missing = sorted({f.name for f in dataclasses.fields(schema)} - set(values))
        assert missing == [], f"{path.name} leaves {missing} to the schema's Python defaults"
        parse(schema, values, where)


def test_linear_probe_protocol_sets_every_probe_field():
    values = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "protocol" / "linear_probe.yaml"))
    values.pop("defaults", None)
    fields = {f.name for f in dataclasses.fields(ProbeSpec)}
    assert fields - set(values) == set()


def test_one_error_format():
    cfg = compose_cfg("distill", [*BASE, "method=idm", "method.queue.lr=abc"])
    with pytest.raises(RetaError, match=r"^method\.queue\.lr: Value 'abc' of type 'str' could not be"):
        check_method(cfg)
    cfg = compose_cfg("distill", [*BASE, "method=fadrm", "~method.augment.jitter"])
    with pytest.raises(RetaError, match=r"^method\.augment\.jitter: missing"):
        check_method(cfg)
    cfg = compose_cfg("distill", [*BASE, "method=sfm", "+method.aug.blur=1"])
    with pytest.raises(RetaError, match=r"^method\.aug: unknown keys \['blur'\]; valid: \[.*'noise_p'"):
        check_method(cfg)


def _targets(node, path="method"):
    """Every ``{_target_: Class, key: value}`` mapping under ``node`` (plain containers), with its path."""
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str) and not node.get("_partial_"):
            yield path, node
        for key, value in node.items():
            yield from _targets(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _targets(value, f"{path}[{i}]")


@pytest.mark.parametrize("method", METHODS)
def test_plugin_constructor_defaults_agree_with_the_yaml(method):
    """A plug-in class built from a method config (PTA, DRC, loss terms …) may keep Python defaults for library
    callers, but each must equal the value the YAML file that introduces it gives it (presets that derive from that
    file may change a value on purpose): one default, not two that disagree."""
    cfg = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "method" / f"{method}.yaml"))
    disagree = []
    for path, spec in _targets(cfg):
        cls = get_class(spec["_target_"])
        params = dict(inspect.signature(cls).parameters)
        extra = next((p for p in params.values() if p.kind is inspect.Parameter.VAR_KEYWORD), None)
        for key, value in spec.items():
            if key == "_target_" or (isinstance(value, str) and "${" in value):
                continue
            default = params[key].default if key in params else inspect.Parameter.empty
            if default is inspect.Parameter.empty and extra is not None and key not in params:
                schema = getattr(cls, "topology_schema", None)  # **topology: the fields of that dataclass
                fields = {f.name: f.default for f in dataclasses.fields(schema)} if schema is not None else {}
                default = fields.get(key, inspect.Parameter.empty)
            if default is not inspect.Parameter.empty and default != value:
                disagree.append(f"{path}.{key}: YAML {value!r}, {cls.__name__} default {default!r}")
    assert disagree == []


def test_group_options_are_composed_through_hydra_inside_and_outside_an_app():
    from hydra import initialize_config_dir

    from reta.utils.groups import group_option

    outside = group_option("model", "convnet_d3_w32", "method.teachers")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):  # as inside @hydra.main
        inside = group_option("model", "convnet_d3_w32", "method.teachers")
    assert inside == outside == {"name": "convnet", "kwargs": {"depth": 3, "width": 32, "norm": "batch", "pool": "avg"}}
    with pytest.raises(RetaError, match=r"^method\.teachers: unknown model config 'convnet_d9'; valid: .*convnet_tiny"):
        group_option("model", "convnet_d9", "method.teachers")


@pytest.mark.parametrize(("conf", "block", "spec_path"), [
    ("backbone/simclr.yaml", "ssl", "reta.training.ssl.SSLSpec"),
    ("backbone/simclr.yaml", "probe", "reta.training.probe.GoldenSpec"),
    ("protocol/linear_probe.yaml", None, "reta.training.probe.ProbeSpec"),
])
def test_backbone_and_probe_spec_defaults_agree_with_their_default_yaml(conf, block, spec_path):
    """The backbone and probe specs keep Python defaults (their maps are part of cached backbone keys); each default
    equals the value of the config that is the default of its group (the SimCLR backbone, the linear probe)."""
    cfg = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / conf))
    values = cfg[block] if block else cfg
    defaults = {f.name: f.default for f in dataclasses.fields(get_class(spec_path))
                if f.default is not dataclasses.MISSING}
    disagree = [f"{k}: YAML {v!r}, default {defaults[k]!r}" for k, v in values.items()
                if k in defaults and defaults[k] != v]
    assert disagree == []

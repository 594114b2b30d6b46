"""Which backbone ``protocol.inherit=true`` builds for the set's own classifier: one from the user's configuration,
never the ``backbone.config`` a distilled set's ``meta.json`` carries (an untrusted set could otherwise name a hub
download, any file as a checkpoint, or a 10⁹-step SimCLR run). The set only *names* its backbone (``name``, ``key``).

The source is, in this order: ``source_backbone`` (``+backbone@source_backbone=NAME`` and its overrides), the run's
``backbone`` when the set was made for it by name, else the installed ``conf/backbone/<name>.yaml``. Its key
(:func:`reta.training.backbone.expected_key`) must be the key the set recorded; a mismatch is one line that says how
to pass the settings the set was made with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from reta.errors import RetaError
from reta.training.backbone import BackboneSpec, expected_key
from reta.utils.config import plain

BACKBONE_CONF = Path(__file__).resolve().parent.parent / "conf" / "backbone"


def source_backbone_spec(cfg: Any, made_for: dict, where: str) -> BackboneSpec:
    """The spec of the backbone whose golden head is inherited (see the module docstring); ``made_for`` is the set's
    ``meta.json`` ``backbone`` record, ``where`` names the set in errors. Builds nothing."""
    name, recorded = made_for.get("name"), made_for.get("key")
    if cfg.get("source_backbone"):
        candidates = [("source_backbone", BackboneSpec.from_cfg(cfg.source_backbone))]
    else:
        candidates = [(f"backbone={name}", BackboneSpec.from_cfg(cfg.backbone))] if (
            plain(cfg.backbone).get("name") == name) else []
        valid = sorted(p.stem for p in BACKBONE_CONF.glob("*.yaml"))
        if name in valid:
            candidates.append((f"conf/backbone/{name}.yaml",
                               BackboneSpec.from_cfg(OmegaConf.load(BACKBONE_CONF / f"{name}.yaml"))))
        elif not candidates:
            raise RetaError(f"{where} was made for backbone {name!r}, for which there is no backbone config; valid: "
                            f"{', '.join(valid)} (or pass +backbone@source_backbone=NAME)")
    tried = []
    for origin, spec in candidates:
        want = expected_key(cfg, spec)
        if spec.name == name and want in (None, recorded):
            return spec
        tried.append(f"{origin} gives {spec.name} {want}")
    raise RetaError(f"{where} was made for backbone {name} {recorded}, but {'; '.join(tried)}; pass "
                    f"+backbone@source_backbone={name} with the settings the set was made with")


def check_source_key(source_key: str, made_for: dict, where: str) -> None:
    """After building a ``source: teacher`` backbone (its key depends on the cached teacher): the set's key."""
    if source_key != made_for.get("key"):
        raise RetaError(f"{where} was made for backbone {made_for.get('name')} {made_for.get('key')}, but the "
                        f"configured one has key {source_key}; pass the teacher settings the set was made with")

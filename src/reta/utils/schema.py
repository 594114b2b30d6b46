"""The one config parser: a config mapping → a dataclass instance, nested dataclass fields included.

A schema is a dataclass whose type hints say what each key holds; nested dataclass fields are parsed recursively from
those hints (``OmegaConf.structured``), so no module lists the nested types by name. The values come from the YAML,
the one source of defaults: method, recipe and student-protocol schemas have no defaults of their own, and
``tests/unit/test_schemas.py`` checks that every shipped config sets every field of its schema. Every failure is one
:class:`~reta.errors.RetaError` line in one format, ``<where>.<key>: <message>``:

* an unknown key (with the valid keys),
* a value of the wrong type (``method.queue.lr: Value 'abc' of type 'str' could not be converted to Float``),
* a field the config does not set (``method.lr: missing``; a field with a Python default — the backbone, SSL and
  golden-probe specs, whose config maps are part of cached backbones' keys — is filled from it),
* a check of the dataclass's ``__post_init__`` (raised as is).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from reta.errors import RetaError
from reta.utils.config import plain

T = TypeVar("T")


def nested_schema(cls: type, name: str) -> type | None:
    """The dataclass type of field ``name`` of ``cls`` (``Optional[X]`` included), or None."""
    hint = typing.get_type_hints(cls).get(name)
    args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_args(hint) else [hint]
    return args[0] if len(args) == 1 and dataclasses.is_dataclass(args[0]) else None


def parse(cls: type[T], values: Any, where: str) -> T:
    """``values`` (a mapping, OmegaConf node or None) as an instance of dataclass ``cls``; see the module docstring.
    Nested dataclass fields are parsed first (depth first), then the other fields are converted to their declared
    types through ``OmegaConf.structured(cls)``."""
    values = plain(values)
    values = dict(values) if values is not None else {}
    if not isinstance(values, Mapping):
        raise RetaError(f"{where}: must be a mapping, got {values!r}")
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise RetaError(f"{where}: unknown keys {unknown}; valid: {sorted(valid)}")
    nested = {name: sub for name in valid if (sub := nested_schema(cls, name)) is not None}
    kwargs = {k: parse(nested[k], v, f"{where}.{k}") for k, v in values.items() if k in nested and v is not None}
    flat = {k: v for k, v in values.items() if k not in kwargs}
    try:
        node = OmegaConf.merge(OmegaConf.structured(cls), flat)
        container = OmegaConf.to_container(node, resolve=True)
        converted = {k: container[k] for k in flat}
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise RetaError(f"{where}.{key}: {str(err).splitlines()[0]}") from None
    missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in values
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if missing:
        raise RetaError(f"{where}.{missing[0]}: missing (every field of {cls.__name__} must be set in the config; "
                        f"missing: {', '.join(missing)})")
    return cls(**converted, **kwargs)

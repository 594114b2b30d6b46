"""A plug-in function named in a config by a Hydra ``_target_`` (``{_target_: dotted.path, _partial_: true}``):
``method.synthesize``, ``protocol.evaluator``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hydra.utils import instantiate

from reta.errors import RetaError
from reta.utils.config import plain


def plugin_function(spec: Any, where: str, signature: str) -> Callable:
    """The function ``spec`` names (``_partial_: true`` makes ``instantiate`` return it); a missing or unloadable
    target → one line naming ``where`` (e.g. ``method.synthesize``) and the ``signature`` it must have."""
    spec = plain(spec)
    target = spec.get("_target_") if isinstance(spec, dict) else None
    if not target:
        raise RetaError(f"{where}._target_ must name a function {signature}")
    try:
        fn = instantiate(spec)
    except Exception as err:  # noqa: BLE001 - hydra wraps import errors in its own types
        raise RetaError(f"{where}: cannot load {target!r} ({str(err).splitlines()[0]})") from None
    if not callable(fn):
        raise RetaError(f"{where}: {target!r} is not callable (set _partial_: true for a function)")
    return fn

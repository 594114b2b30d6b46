"""Evaluation protocols as plug-ins (docs/architecture.md, "Add a protocol").

A protocol config (``conf/protocol/<name>.yaml``) names its evaluator with a Hydra ``_target_``::

    evaluator: {_target_: reta.evaluation.students.evaluate, _partial_: true}
    requires_teacher: true    # the pipeline squeezes the run's teacher first (KD students need it)

An evaluator is ``fn(cfg, inputs: EvalInputs) -> dict``: ``inputs`` is the result of the one shared "load and check
the set" step (:func:`reta.evaluation.sets.load_inputs`: seeds, the distilled set checked against the dataset, the
protocol it was made for, the held-out split and the IPC), and the returned dict is the ``metrics.json`` content
(:func:`reta.evaluation.metrics.metrics_record` builds the common part). The evaluate stage instantiates the evaluator,
writes what it returns atomically and prints it; an evaluator writes nothing itself except its own caches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reta.utils.config import plain
from reta.utils.plugins import plugin_function

#: keys of a protocol config that declare how it plugs in (read by the stage), not settings of the protocol itself
CAPABILITY_KEYS = ("evaluator", "requires_teacher")


def protocol_values(protocol_cfg: Any) -> dict:
    """The protocol's own settings: the config without its :data:`CAPABILITY_KEYS`."""
    return {k: v for k, v in dict(plain(protocol_cfg) or {}).items() if k not in CAPABILITY_KEYS}


def evaluator_function(protocol_cfg: Any) -> Callable:
    """``protocol.evaluator`` (``{_target_: dotted.path, _partial_: true}``) → the evaluator; a missing or unloadable
    target → one-line :class:`RetaError`."""
    spec = (plain(protocol_cfg) or {}).get("evaluator") if protocol_cfg is not None else None
    return plugin_function(spec, "protocol.evaluator",
                           "fn(cfg, inputs) -> metrics (e.g. reta.evaluation.students.evaluate)")

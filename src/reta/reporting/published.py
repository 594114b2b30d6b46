"""Published numbers beside reta's: the ``published=`` CSV of ``reta-report`` and the "published vs reta" table.

The CSV has the columns ``dataset, ipc, method, acc`` (accuracy in %) and, optionally, ``std`` (the published standard
deviation), ``protocol`` (the reta protocol that reproduces the published evaluation: a cell of another protocol is
never compared with it) and ``iterations`` (the published synthesis budget). Empty optional fields mean "not
published". Lines starting with ``#`` are comments (the sources).

:func:`comparison_table` puts every cell that has a published number next to it: reta's mean ± std over student seeds,
the published mean ± std, the difference, the iterations reta's set ran against the published budget and the set's
method setting (its ``scale`` label: ``paper`` or, in bold, ``cpu``), so a cell run below the published budget or at
reta's CPU-scale setting says so in the table itself. A cell is compared only when its students trained under the
published protocol as committed: the same protocol name, and the settings and student that ``reta-evaluate
protocol=<name>`` composes (:func:`committed_protocol`); a run that overrode one (``protocol.epochs=300`` under ``dc``,
another student width) is listed below the table with the settings that differ.
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reta.errors import RetaError
from reta.utils.groups import composed_config, group_options
from reta.utils.markdown import md_table

REQUIRED = ("dataset", "ipc", "method", "acc")
OPTIONAL = ("std", "protocol", "iterations")
#: protocol settings that do not change what a student trains on: its name (the cell's own) and when it is also
#: tested along the way (the compared number is the last epoch's)
NOT_TRAINING = ("name", "eval_every")


@dataclass(frozen=True)
class Published:
    acc: float                      # %
    std: float | None = None        # %
    protocol: str | None = None     # None: shown beside the cells of every protocol
    iterations: int | None = None   # the published synthesis budget

    def applies_to(self, protocol: str) -> bool:
        return self.protocol is None or self.protocol == protocol

    def text(self) -> str:
        return f"{self.acc:.1f}" + (f" ± {self.std:.1f}" if self.std is not None else "")


def _optional(row: dict, key: str, kind):
    value = (row.get(key) or "").strip()
    return kind(value) if value else None


def load_published(path: str | Path) -> dict[tuple[str, int, str], Published]:
    """``{(dataset, ipc, method): Published}`` from the CSV described in the module docstring."""
    p = Path(path)
    if not p.is_file():
        raise RetaError(f"published-numbers file {p} does not exist")
    out = {}
    with open(p, newline="") as fh:
        reader = csv.DictReader(line for line in fh if not line.startswith("#"))
        unknown = sorted(set(reader.fieldnames or []) - set(REQUIRED) - set(OPTIONAL))
        if unknown:
            raise RetaError(f"{p}: unknown columns {unknown} (columns: {', '.join(REQUIRED + OPTIONAL)})")
        for row in reader:
            try:
                key = (row["dataset"], int(row["ipc"]), row["method"])
                if key in out:
                    raise RetaError(f"{p}: two rows for {key[0]} IPC {key[1]} {key[2]}")
                out[key] = Published(float(row["acc"]), _optional(row, "std", float), _optional(row, "protocol", str),
                                     _optional(row, "iterations", int))
            except (KeyError, TypeError, ValueError) as err:
                raise RetaError(f"{p}: bad row {row} (need {', '.join(REQUIRED)}; {', '.join(OPTIONAL)} optional: "
                                "std a number, iterations an integer)") from err
    valid = group_options("protocol")
    unknown = sorted({v.protocol for v in out.values() if v.protocol is not None} - set(valid))
    if unknown:
        raise RetaError(f"{p}: unknown protocol(s) {unknown}; valid: {', '.join(valid)}")
    return out


def committed_protocol(name: str) -> dict:
    """``{"protocol": settings, "student": config}`` that ``reta-evaluate protocol=<name>`` runs with (composed
    through Hydra, so the protocol's own student override counts)."""
    return composed_config("evaluate", [f"protocol={name}"], ["protocol", "student"], f"published protocol {name!r}")


def _flat(value, prefix: str) -> dict:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flat(sub, f"{prefix}.{key}").items()}
    return {prefix: json.dumps(value, sort_keys=True, default=str)}


def setting_differences(settings: set[str], reference: dict, protocol: str) -> list[str]:
    """``key=value (protocol: value)`` for every protocol setting or student field of the cells' runs (``settings``:
    :attr:`reta.reporting.tables.Cell.settings`) that differs from ``reference`` (:func:`committed_protocol`). Protocol
    settings compare where both have them (a record written before a setting existed keeps its default); the student
    compares whole (a field on one side only is a different network)."""
    def protocol_fields(p: dict) -> dict:
        return _flat({k: v for k, v in p.items() if k not in NOT_TRAINING}, "protocol")

    want_protocol, want_student = protocol_fields(reference["protocol"]), _flat(reference["student"], "student")
    out = set()
    for text in settings:
        run = json.loads(text)
        have = protocol_fields(run["protocol"])
        pairs = [(k, have[k], want_protocol[k]) for k in set(have) & set(want_protocol)]
        if run.get("student") is not None:
            student = _flat(run["student"], "student")
            pairs += [(k, student.get(k, "unset"), want_student.get(k, "unset"))
                      for k in set(student) | set(want_student)]
        out.update(f"{k}={v} ({protocol}: {w})" for k, v, w in pairs if v != w)
    return sorted(out)


def _budget(iterations: set[int], published: int | None) -> str:
    if not iterations:
        return "–"
    ran = "/".join(str(i) for i in sorted(iterations))
    if len(iterations) > 1:  # runs of different budgets in one row: label them apart (reta-evaluate label=…)
        return f"{ran} it (**mixed budgets**)"
    (n,) = iterations
    if published is None:
        return f"{ran} it"
    if n < published:
        return f"{ran} it (**{100 * n / published:.3g} %** of {published})"
    return f"{ran} it (published {published})"


def _scale(scales: set[str]) -> str:
    """The sets' method scale labels; anything but the paper's in bold (a CPU-scale set is not the published method)."""
    if not scales:
        return "–"
    return "/".join(s if s == "paper" else f"**{s}**" for s in sorted(scales))


def comparison_table(cells: list, published: dict[tuple[str, int, str], Published],
                     reference: Callable[[str], dict] = committed_protocol) -> str:
    """The "published vs reta" section: one row per distilled cell with a published number for its (dataset, IPC,
    method) measured on test under the cell's protocol (labelled rows, e.g. the budget snapshots ``dsa_it100``, are
    compared by their set's method), and one per random-subset cell where the CSV has a ``random`` row (a check of
    the evaluation protocol itself); the random subset of the same (dataset, IPC, protocol, student)
    beside it; a cell whose students trained under other settings than the published protocol's committed ones
    (``reference``) is listed below instead. Empty when no cell has one."""
    random = {(c.dataset, c.ipc, c.protocol, c.student, c.split): c for c in cells if c.kind == "random"}
    rows, missed, altered = [], [], []
    committed = functools.cache(reference)  # composed once per protocol
    for c in cells:
        method = "random" if c.kind == "random" else c.set_method or c.method  # labelled rows (snapshots) too
        pub = published.get((c.dataset, c.ipc, method))
        if c.kind not in ("distilled", "random") or c.split != "test" or pub is None:
            continue
        if not pub.applies_to(c.protocol):
            missed.append(f"{c.method} IPC {c.ipc} under {c.protocol} (published under {pub.protocol})")
            continue
        changed = setting_differences(c.settings, committed(c.protocol), c.protocol) if c.settings else []
        if changed:
            altered.append(f"{c.method} IPC {c.ipc} under {c.protocol} with {', '.join(changed)}")
            continue
        mean, std = c.mean_std()
        base = random.get((c.dataset, c.ipc, c.protocol, c.student, c.split)) if c.kind != "random" else None
        rows.append([c.dataset, c.ipc, c.method, c.protocol, c.student, f"{mean:.2f} ± {std:.2f} (n={len(c.acc_last)})",
                     pub.text(), f"{mean - pub.acc:+.2f}", _budget(c.iterations, pub.iterations), _scale(c.scales),
                     "{:.2f} ± {:.2f}".format(*base.mean_std()) if base else "–"])
    rows.sort(key=lambda r: (r[0], r[1], r[2] != "random", r[2]))
    if not rows and not missed and not altered:
        return ""
    header = ["dataset", "IPC", "method", "protocol", "student", "reta (%)", "published (%)", "Δ (reta − published)",
              "reta iterations", "method setting", "random subset (%)"]
    note = ("\nNot compared (measured under another protocol than the published number's): " + "; ".join(missed)
            + ".\n") if missed else ""
    note += ("\nNot compared (students trained under other settings than the published protocol's committed ones): "
             + "; ".join(altered) + ".\n") if altered else ""
    return ("### Published vs reta (last-epoch accuracy; published numbers as their sources report them)\n\n"
            + (md_table(header, rows) + "\n" if rows else "") + note)

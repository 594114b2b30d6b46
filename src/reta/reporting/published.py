"""Published numbers beside reta's: the ``published=`` CSV of ``reta-report`` and the "published vs reta" table.

The CSV has the columns ``dataset, ipc, method, acc`` (accuracy in %) and, optionally, ``std`` (the published standard
deviation), ``protocol`` (the reta protocol that reproduces the published evaluation: a cell of another protocol is
never compared with it) and ``iterations`` (the published synthesis budget). Empty optional fields mean "not
published". Lines starting with ``#`` are comments (the sources).

:func:`comparison_table` puts every cell that has a published number next to it: reta's mean ± std over student seeds,
the published mean ± std, the difference, the iterations reta's set ran against the published budget and the set's
method setting (its ``scale`` label: ``paper`` or, in bold, ``cpu``), so a cell run below the published budget or at
reta's CPU-scale setting says so in the table itself.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from reta.errors import RetaError
from reta.utils.markdown import md_table

REQUIRED = ("dataset", "ipc", "method", "acc")
OPTIONAL = ("std", "protocol", "iterations")


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
    return out


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
        pct = 100 * n / published
        share = f"{pct:.0f}" if pct >= 1 else f"{pct:.2g}"
        return f"{ran} it (**{share} %** of {published})"
    return f"{ran} it (published {published})"


def _scale(scales: set[str]) -> str:
    """The sets' method scale labels; anything but the paper's in bold (a CPU-scale set is not the published method)."""
    if not scales:
        return "–"
    return "/".join(s if s == "paper" else f"**{s}**" for s in sorted(scales))


def comparison_table(cells: list, published: dict[tuple[str, int, str], Published]) -> str:
    """The "published vs reta" section: one row per distilled cell with a published number for its (dataset, IPC,
    method) measured on test under the cell's protocol (labelled rows, e.g. the budget snapshots ``dsa_it100``, are
    compared by their set's method), and one per random-subset cell where the CSV has a ``random`` row (a check of
    the evaluation protocol itself); the random subset of the same (dataset, IPC, protocol, student)
    beside it. Empty when no cell has one."""
    random = {(c.dataset, c.ipc, c.protocol, c.student, c.split): c for c in cells if c.kind == "random"}
    rows, missed = [], []
    for c in cells:
        method = "random" if c.kind == "random" else c.set_method or c.method  # labelled rows (snapshots) too
        pub = published.get((c.dataset, c.ipc, method))
        if c.kind not in ("distilled", "random") or c.split != "test" or pub is None:
            continue
        if not pub.applies_to(c.protocol):
            missed.append(f"{c.method} IPC {c.ipc} under {c.protocol} (published under {pub.protocol})")
            continue
        mean, std = c.mean_std()
        base = random.get((c.dataset, c.ipc, c.protocol, c.student, c.split)) if c.kind != "random" else None
        rows.append([c.dataset, c.ipc, c.method, c.protocol, c.student, f"{mean:.2f} ± {std:.2f} (n={len(c.acc_last)})",
                     pub.text(), f"{mean - pub.acc:+.2f}", _budget(c.iterations, pub.iterations), _scale(c.scales),
                     "{:.2f} ± {:.2f}".format(*base.mean_std()) if base else "–"])
    rows.sort(key=lambda r: (r[0], r[1], r[2] != "random", r[2]))
    if not rows and not missed:
        return ""
    header = ["dataset", "IPC", "method", "protocol", "student", "reta (%)", "published (%)", "Δ (reta − published)",
              "reta iterations", "method setting", "random subset (%)"]
    note = ("\nNot compared (measured under another protocol than the published number's): " + "; ".join(missed)
            + ".\n") if missed else ""
    return ("### Published vs reta (last-epoch accuracy; published numbers as their sources report them)\n\n"
            + (md_table(header, rows) + "\n" if rows else "") + note)

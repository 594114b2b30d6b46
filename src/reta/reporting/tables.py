"""Aggregate many runs' ``metrics.json`` into tables (Markdown + CSV).

A row is one (dataset, IPC, protocol, student, row name) cell. Every set kind of a run keeps its own row
(:func:`row_name`): the ``random`` baseline as ``random``, the ``distilled`` set under its ``label``
(``reta-evaluate label=…``) else its method's name, the linear probe's full-data head as ``full data``, and the
inherited-classifier accuracies as ``<row> (inherited)``; a distilled set whose method is itself ``random`` is
``random (distilled set)``, never the baseline. Rows of the same cell from different runs are merged per
evaluation seed (so a sweep that split seeds over jobs aggregates correctly, and the random baseline that every run
of a table re-evaluates with the same seeds — deterministically the same students — is counted once per seed).
Accuracies are reported in percent, mean ± population std over seeds (docs/architecture.md evaluation contract). Runs
measured on a held-out split of train (``reta-evaluate holdout_per_class=N``, ``eval_split`` in metrics.json) form their
own cells and tables, never merged with test accuracies.

``to_markdown(..., side_by_side=["kd", "hard"])`` puts the protocols' accuracies of the same sets next to each other
(one column per IPC and protocol): the hard-label view of DD-Ranking (github.com/NUS-HPC-AI-Lab/DD-Ranking) beside the
soft-label (KD) one, to show how much of a set's KD accuracy the labels carry rather than the images.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from reta.errors import RetaError
from reta.utils.markdown import md_table


@dataclass
class Cell:
    dataset: str
    ipc: int
    protocol: str
    student: str
    method: str
    split: str = "test"  # where the students were measured: test, or holdout<N> (a held-out split of train)
    kind: str = "distilled"  # the metrics.json set this row comes from: random, distilled, full, *_inherited
    per_seed: dict[int, tuple[float, float]] = field(default_factory=dict)  # seed -> (last, best)
    seconds: list[float] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    iterations: set[int] = field(default_factory=set)  # the synthesis iterations of the distilled sets (metrics.json)
    set_method: str = ""  # the distilled set's method (metrics.json ``method``), whatever the row's label
    scales: set[str] = field(default_factory=set)  # the sets' method scale labels (metrics.json ``synthesis_scale``)
    settings: set[str] = field(default_factory=set)  # JSON {"protocol": protocol_config, "student": student_config}

    @property
    def acc_last(self) -> list[float]:
        return [self.per_seed[s][0] for s in sorted(self.per_seed)]

    @property
    def acc_best(self) -> list[float]:
        return [self.per_seed[s][1] for s in sorted(self.per_seed)]

    @property
    def key(self) -> tuple:
        return (self.dataset, self.ipc, self.protocol, self.student, self.method, self.split)

    def mean_std(self, best: bool = False) -> tuple[float, float]:
        vals = self.acc_best if best else self.acc_last
        return 100 * statistics.fmean(vals), 100 * (statistics.pstdev(vals) if len(vals) > 1 else 0.0)


def find_metrics(roots: Iterable[str | Path]) -> list[Path]:
    """Every ``metrics.json`` under the given files/directories (sorted)."""
    found: list[Path] = []
    for root in roots:
        p = Path(root)
        if p.is_file() and p.name == "metrics.json":
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(p.rglob("metrics.json")))
        else:
            raise RetaError(f"report input {p} is neither a metrics.json nor a directory")
    return found


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_metrics(m: dict, path) -> None:
    """One line naming the file and the first field of ``m`` that :func:`collect` cannot use."""
    def bad(field: str, want: str) -> RetaError:
        return RetaError(f"{path} is not a reta metrics.json: {field} must be {want}")

    for key in ("dataset", "protocol", "student"):
        if not isinstance(m.get(key), str):
            raise bad(key, "a string")
    if not isinstance(m.get("ipc"), int) or isinstance(m["ipc"], bool) or m["ipc"] < 1:
        raise bad("ipc", "a positive integer")
    seeds = m.get("seeds")
    if seeds is not None and not (isinstance(seeds, list) and all(isinstance(x, int) for x in seeds)):
        raise bad("seeds", "a list of integers")
    if not isinstance(m["sets"], dict):
        raise bad("sets", "an object")
    for name, entry in m["sets"].items():
        for key in ("acc_last", "acc_best", "seconds"):
            vals = entry.get(key, []) if isinstance(entry, dict) else None
            if not (isinstance(vals, list) and all(_is_number(v) for v in vals)) or (key == "acc_last" and not vals):
                raise bad(f"sets.{name}.{key}", "a list of numbers")


RESERVED_ROWS = ("random", "full data")


def row_name(kind: str, method: str) -> str:
    """The table row of the set ``kind`` (a key of metrics.json ``sets``) of a run whose distilled set is ``method``
    (its label, else its method): distinct for every kind, so no kind overwrites another's seeds."""
    if kind == "random":
        return "random"
    if kind == "full":
        return "full data"
    distilled = f"{method} (distilled set)" if method in RESERVED_ROWS else method
    if kind == "distilled":
        return distilled
    if kind.endswith("_inherited"):
        base = kind[: -len("_inherited")]
        return f"{'random' if base == 'random' else row_name(base, method)} (inherited)"
    return f"{distilled} ({kind})"


def collect(paths: Iterable[Path]) -> list[Cell]:
    """Merge the sets of every metrics file into cells keyed by (dataset, ipc, protocol, student, method)."""
    cells: dict[tuple, Cell] = {}
    for path in paths:
        try:
            m = json.loads(Path(path).read_text())
            sets = m["sets"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise RetaError(f"{path} is not a reta metrics.json ({type(err).__name__}: {err})") from err
        check_metrics(m, path)
        for set_name, s in sets.items():
            method = row_name(set_name, m.get("label") or m.get("method") or "distilled")
            cell = Cell(m["dataset"], int(m["ipc"]), m["protocol"], m["student"], method, m.get("eval_split", "test"),
                        kind=set_name, set_method=str(m.get("method") or ""))
            cell = cells.setdefault(cell.key, cell)
            seeds = m.get("seeds") or list(range(len(s["acc_last"])))
            for seed, last, best in zip(seeds, s["acc_last"], s.get("acc_best", s["acc_last"])):
                cell.per_seed[int(seed)] = (float(last), float(best))
            cell.seconds += list(s.get("seconds", []))
            if isinstance(m.get("protocol_config"), dict):  # the settings the students trained under (older: none)
                cell.settings.add(json.dumps({"protocol": m["protocol_config"], "student": m.get("student_config")},
                                             sort_keys=True, default=str))
            if set_name == "distilled":
                if isinstance(m.get("synthesis_iterations"), int):
                    cell.iterations.add(m["synthesis_iterations"])
                if isinstance(m.get("synthesis_scale"), str):
                    cell.scales.add(m["synthesis_scale"])
            cell.runs.append(str(Path(path).parent))
    return sorted(cells.values(), key=lambda c: c.key)


def to_csv(cells: list[Cell]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "ipc", "protocol", "student", "method", "n_seeds", "acc_mean", "acc_std", "acc_best_mean",
                "seconds_per_student", "split"])
    for c in cells:
        mean, std = c.mean_std()
        best, _ = c.mean_std(best=True)
        secs = statistics.fmean(c.seconds) if c.seconds else ""
        w.writerow([c.dataset, c.ipc, c.protocol, c.student, c.method, len(c.acc_last), f"{mean:.2f}", f"{std:.2f}",
                    f"{best:.2f}", f"{secs:.1f}" if secs != "" else "", c.split])
    return buf.getvalue()


def _split_note(split: str) -> str:
    return "" if split == "test" else f", accuracy on {split} (held-out split of train, not test)"


def to_markdown(cells: list[Cell], published: dict | None = None, side_by_side: list[str] | None = None) -> str:
    """One table per (dataset, protocol, student, split): rows = methods, columns = IPC, entries 'mean ± std'
    (with the published number in brackets where ``published`` has one). With ``side_by_side`` (protocol names, e.g.
    ``["kd", "hard"]``) the cells of those protocols share one table per (dataset, student, split), one column per
    IPC and protocol; cells of other protocols keep their own tables."""
    side = [str(p) for p in side_by_side or []]
    out: list[str] = []
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        protocol = "+".join(side) if c.protocol in side else c.protocol
        groups.setdefault((c.dataset, protocol, c.student, c.split), []).append(c)
    for (dataset, protocol, student, split), group in groups.items():
        protos = side if "+" in protocol or (side and protocol in side) else [protocol]
        ipcs = sorted({c.ipc for c in group})
        cols = [(i, p) for i in ipcs for p in protos if any(c.ipc == i and c.protocol == p for c in group)]
        methods = sorted({c.method for c in group}, key=lambda m: (m not in RESERVED_ROWS, m != "random", m))
        if len(protos) > 1:
            out.append(f"### {dataset} — protocols {' vs '.join(protos)} (same sets), student {student}"
                       f"{_split_note(split)}\n")
            header = ["method", *(f"IPC {i} {p}" for i, p in cols)]
        else:
            out.append(f"### {dataset} — protocol {protocol}, student {student}{_split_note(split)}\n")
            header = ["method", *(f"IPC {i}" for i, _ in cols)]
        by = {(c.method, c.ipc, c.protocol): c for c in group}
        table = []
        for m in methods:
            row = []
            for i, p in cols:
                c = by.get((m, i, p))
                if c is None:
                    row.append("–")
                else:
                    mean, std = c.mean_std()
                    row.append(f"{mean:.2f} ± {std:.2f} (n={len(c.acc_last)})")
                pub = (published or {}).get((dataset, i, m))
                if (pub is not None and pub.applies_to(p) and (c is None or c.kind in ("distilled", "random"))
                        and (len(protos) == 1 or p == protos[0])):
                    row[-1] += f" [paper {pub.acc:.1f}]"
            table.append([m, *row])
        out.append(md_table(header, table))
        out.append("")
    return "\n".join(out)

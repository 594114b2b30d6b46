"""Rewrite absolute machine paths in committed result files to paths relative to the run root.

    python experiments/relativize_paths.py [--check] [ROOT ...]      (default ROOT: experiments/)

Committed results (``metrics.json``, ``meta.json``, ``*.csv`` under ``experiments/``) must not name the machine they
were made on. A run's files are committed as ``<table>/runs/<run name>/metrics.json``; on the machine that made them
the same run lived in some ``…/<run name>/`` directory (its *run root*), and paths inside it — ``distilled`` of an
evaluation, for instance ``<somewhere>/<run name>/distilled`` — are rewritten relative to that root
(``distilled``). An absolute path that does not pass through the run's own folder cannot be made relative to it and
is dropped (JSON: the value becomes ``null``; CSV: the cell becomes empty), and the script says so.

``--check`` rewrites nothing and exits 1 when any file would change (for CI); otherwise changed files are written
atomically and listed. Only string values that are absolute POSIX paths (``/`` followed by a path component) are
touched; numbers, names and relative paths are left alone. ``collect_runs.py`` applies :func:`relativize_value`
when it copies new runs, so freshly collected files need no second pass.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from pathlib import Path, PurePosixPath
from typing import Any

#: a string that is an absolute POSIX path: "/" then at least one path component (not "/" alone, not "//x").
ABSOLUTE = re.compile(r"^/[^/\s][^\s]*$")
SUFFIXES = (".json", ".csv")


def is_absolute_path(value: Any) -> bool:
    return isinstance(value, str) and bool(ABSOLUTE.match(value))


def relativize_value(value: str, run_name: str) -> str | None:
    """``value`` relative to the run root named ``run_name`` (the last path component equal to it), ``"."`` for the
    root itself; ``None`` when the path does not pass through a folder of that name (a machine path to drop)."""
    parts = PurePosixPath(value).parts[1:]  # without the leading "/"
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == run_name:
            rest = parts[i + 1:]
            return str(PurePosixPath(*rest)) if rest else "."
    return None


def _rewrite(obj: Any, run_name: str, where: str, notes: list[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _rewrite(v, run_name, f"{where}.{k}" if where else str(k), notes) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rewrite(v, run_name, f"{where}[{i}]", notes) for i, v in enumerate(obj)]
    if is_absolute_path(obj):
        new = relativize_value(obj, run_name)
        notes.append(f"{where}: {'dropped (not under the run folder)' if new is None else repr(new)}")
        return new
    return obj


def rewrite_json(path: Path) -> tuple[str | None, list[str]]:
    """New text of a JSON file (``None`` if unchanged) and what changed. The run name is the file's folder."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    notes: list[str] = []
    new = _rewrite(data, path.parent.name, "", notes)
    if not notes:
        return None, notes
    return json.dumps(new, indent=2) + "\n", notes


def rewrite_csv(path: Path) -> tuple[str | None, list[str]]:
    """New text of a CSV file: absolute-path cells relative to the file's folder name, else emptied."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    comments = [ln for ln in lines if ln.startswith("#")]
    body = "".join(ln for ln in lines if not ln.startswith("#"))
    rows = list(csv.reader(io.StringIO(body)))
    notes: list[str] = []
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            if is_absolute_path(cell):
                new = relativize_value(cell, path.parent.name)
                notes.append(f"row {r} col {c}: {'dropped' if new is None else repr(new)}")
                row[c] = "" if new is None else new
    if not notes:
        return None, notes
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return "".join(comments) + out.getvalue(), notes


def result_files(roots: list[Path]) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        if root.is_file():
            files.append(root)
        else:
            files.extend(p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in SUFFIXES)
    return files


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    roots = [Path(a) for a in argv if a != "--check"] or [Path(__file__).resolve().parent]
    missing = [str(r) for r in roots if not r.exists()]
    if missing:
        print(f"error: not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    changed = 0
    for path in result_files(roots):
        rewrite = rewrite_json if path.suffix == ".json" else rewrite_csv
        try:
            new, notes = rewrite(path)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            print(f"error: {path}: cannot parse ({err})", file=sys.stderr)
            return 2
        if new is None:
            continue
        changed += 1
        print(f"{'would rewrite' if check else 'rewrote'} {path}: {'; '.join(notes)}")
        if not check:
            _write_atomic(path, new)
    print(f"{changed} file(s) {'hold absolute paths' if check else 'rewritten'}")
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

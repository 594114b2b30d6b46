"""Committed results and docs name no machine: no absolute paths under experiments/ or docs/.

Also pins experiments/relativize_paths.py, the script that rewrites such paths relative to the run root.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

SCANNED = ("experiments", "docs")
#: machine roots that must never appear in a committed result or page (a path component after them)
MACHINE_PATH = re.compile(r"/(?:work|tmp|root|home)/")
BINARY = {".png", ".jpg", ".jpeg", ".pdf", ".pt", ".npy", ".npz", ".gz", ".zip"}
SCRIPT = REPO / "experiments" / "relativize_paths.py"


def committed_text_files() -> list[Path]:
    files = []
    for top in SCANNED:
        root = REPO / top
        if root.is_dir():
            files += [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() not in BINARY
                      and "__pycache__" not in p.parts]
    return files


def test_scan_finds_the_committed_results():
    """The scan covers the result files (a wrong root would make the next test pass vacuously)."""
    names = {p.name for p in committed_text_files()}
    assert "metrics.json" in names and "README.md" in names


def test_no_absolute_machine_paths_in_experiments_or_docs():
    offenders = []
    for path in committed_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()[:100]}")
    assert not offenders, "absolute machine paths (run experiments/relativize_paths.py):\n" + "\n".join(offenders)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False)


@pytest.fixture
def run_tree(tmp_path: Path) -> Path:
    """A committed-looking run folder whose metrics.json and CSV hold machine paths."""
    run = tmp_path / "table" / "runs" / "fadrm_ipc10_s0"
    run.mkdir(parents=True)
    metrics = {"distilled": "/work/x/outputs/grid/fadrm_ipc10_s0/distilled", "method": "fadrm",
               "nested": {"log": "/tmp/elsewhere/log.csv", "note": "a/relative/path"}, "acc": [0.5]}
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (run / "cells.csv").write_text("# a comment\nname,path\nx,/home/u/fadrm_ipc10_s0\ny,kept\n")
    return tmp_path


def test_relativize_rewrites_to_the_run_root_and_drops_foreign_paths(run_tree: Path):
    before = (run_tree / "table/runs/fadrm_ipc10_s0/metrics.json").read_text()
    check = _run("--check", str(run_tree))
    assert check.returncode == 1 and "2 file(s) hold absolute paths" in check.stdout
    assert (run_tree / "table/runs/fadrm_ipc10_s0/metrics.json").read_text() == before  # --check writes nothing
    done = _run(str(run_tree))
    assert done.returncode == 0, done.stderr
    m = json.loads((run_tree / "table/runs/fadrm_ipc10_s0/metrics.json").read_text())
    assert m["distilled"] == "distilled"  # relative to the run root …/fadrm_ipc10_s0
    assert m["nested"] == {"log": None, "note": "a/relative/path"}  # not under the run: dropped; relative: kept
    assert m["method"] == "fadrm" and m["acc"] == [0.5]
    csv_text = (run_tree / "table/runs/fadrm_ipc10_s0/cells.csv").read_text()
    assert csv_text == "# a comment\nname,path\nx,.\ny,kept\n"
    again = _run("--check", str(run_tree))  # idempotent: nothing left to rewrite
    assert again.returncode == 0 and "0 file(s)" in again.stdout


def test_relativize_missing_root_is_one_line_exit_2(tmp_path: Path):
    r = _run(str(tmp_path / "nope"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1

"""Copy the ``metrics.json`` of finished runs into ``DEST/<run name>/metrics.json`` so a table's inputs are committed.

    python experiments/collect_runs.py DEST RUN_DIR [RUN_DIR ...]

RUN_DIR is a per-seed grid run (``…/<name>/eval/metrics.json``, name = the folder) or an evaluation folder holding
``metrics.json`` directly (``…/random_ipc10``). The synthesis seconds of the distilled set (``distilled/meta.json``)
are added to the copy as ``synthesis_seconds`` so the table's cost column survives without the images.
``reta-report inputs=[DEST]`` then rebuilds the table from the repository alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def collect(dest: Path, runs: list[Path]) -> int:
    n = 0
    for run in runs:
        metrics = run / "eval" / "metrics.json" if (run / "eval" / "metrics.json").is_file() else run / "metrics.json"
        if not metrics.is_file():
            print(f"skip (no metrics.json yet): {run}", file=sys.stderr)
            continue
        data = json.loads(metrics.read_text())
        meta = run / "distilled" / "meta.json"
        if meta.is_file():
            data["synthesis_seconds"] = json.loads(meta.read_text()).get("synthesis_seconds")
        target = dest / run.name / "metrics.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(target)
        n += 1
    return n


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: collect_runs.py DEST RUN_DIR [RUN_DIR ...]")
    print(f"collected {collect(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])} runs into {sys.argv[1]}")

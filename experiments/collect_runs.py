"""Copy the ``metrics.json`` of finished runs into ``DEST/<run name>/metrics.json`` so a table's inputs are committed.

    python experiments/collect_runs.py [--only-random] DEST RUN_DIR [RUN_DIR ...]

RUN_DIR is a per-seed grid run (``…/<name>/eval/metrics.json``, name = the folder) or an evaluation folder holding
``metrics.json`` directly (``…/random_ipc10``). The synthesis seconds of the distilled set (``distilled/meta.json``)
are added to the copy as ``synthesis_seconds`` (and ``synthesis_iterations`` where the set records them and
``metrics.json`` does not already; for an evaluation folder the set is found through ``metrics.json``'s ``distilled``
path) so the table's cost column survives without the images.
An absolute ``distilled`` path is written relative to the run root (``distilled``) or dropped when the set lives
outside the run (:func:`relativize_paths.relativize_value`): committed files name no machine paths.
``reta-report inputs=[DEST]`` then rebuilds the table from the repository alone. ``--only-random`` keeps just the
random-subset set of each file (a baseline table from runs that also evaluated a distilled set).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from relativize_paths import is_absolute_path, relativize_value


def collect(dest: Path, runs: list[Path], only_random: bool = False) -> int:
    n = 0
    for run in runs:
        metrics = run / "eval" / "metrics.json" if (run / "eval" / "metrics.json").is_file() else run / "metrics.json"
        if not metrics.is_file():
            print(f"skip (no metrics.json yet): {run}", file=sys.stderr)
            continue
        data = json.loads(metrics.read_text())
        if only_random:
            data.update(sets={"random": data["sets"]["random"]}, method="random", distilled=None)
        meta = run / "distilled" / "meta.json"
        if not meta.is_file() and data.get("distilled"):  # an evaluation folder: the set lives elsewhere
            meta = Path(data["distilled"]) / "meta.json"
        if meta.is_file():
            m = json.loads(meta.read_text())
            data["synthesis_seconds"] = m.get("synthesis_seconds")
            if m.get("iterations") is not None and data.get("synthesis_iterations") is None:
                data["synthesis_iterations"] = m["iterations"]
        if is_absolute_path(data.get("distilled")):
            data["distilled"] = relativize_value(data["distilled"], run.name)
        target = dest / run.name / "metrics.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(target)
        n += 1
    return n


if __name__ == "__main__":
    args = sys.argv[1:]
    only = args[:1] == ["--only-random"]
    args = args[1:] if only else args
    if len(args) < 2:
        sys.exit("usage: collect_runs.py [--only-random] DEST RUN_DIR [RUN_DIR ...]")
    print(f"collected {collect(Path(args[0]), [Path(p) for p in args[1:]], only)} runs into {args[0]}")

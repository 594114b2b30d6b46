"""Copy the finished cells of ``run.sh OUT`` into ``runs/<split>/<cell>/metrics.json`` (the committed inputs of the
table) with the set's DRC record summarised: ``drc`` = fraction of merges that kept the slot's own patch, mean pool
rank (teacher-CE rank, 0 = most confident) of the anchors used, the fraction of anchors another slot of the same
class also took at the same merge (``shared_frac``; 0 under ``reuse: per_connection``), and the synthesis seconds.
The ``distilled`` path is stored relative to OUT (no machine paths in committed files).

    python experiments/drc_ipc1/collect.py OUT [DEST]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def drc_summary(meta: dict) -> dict | None:
    anchors = ((meta.get("synthesis") or {}).get("residual") or {}).get("anchors") or {}
    choices = anchors.get("choices") or {}
    ranks = [r for per_class in choices.get("ranks", []) for slot in per_class for r in slot if r is not None]
    if not ranks:
        return None
    shared = total = 0
    for per_class in choices.get("ranks", []):  # [slot][merge]
        for merge in zip(*per_class):
            picks = [r for r in merge if r is not None]
            shared += len(picks) - len(set(picks))
            total += len(picks)
    return {"initial_anchor_frac": choices.get("initial_anchor_frac"), "mean_rank": round(statistics.fmean(ranks), 2),
            "shared_frac": round(shared / total, 4) if total else None, "reuse": anchors.get("reuse"),
            "keep_margin": anchors.get("keep_margin"), "confidence_weight": anchors.get("confidence_weight")}


def main() -> None:
    out = Path(sys.argv[1])
    dest = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent / "runs"
    n = 0
    for metrics in sorted(out.glob("*/*/eval_*/metrics.json")) + sorted(out.glob("*/random_*/metrics.json")):
        data = json.loads(metrics.read_text())
        cell = metrics.parent.parent if metrics.parent.name.startswith("eval_") else metrics.parent
        split = cell.parent.name
        name = f"{cell.name}_{metrics.parent.name[5:]}" if metrics.parent.name.startswith("eval_") else cell.name
        if data.get("distilled"):
            meta = json.loads((Path(data["distilled"]) / "meta.json").read_text())
            data["distilled"] = str(Path(data["distilled"]).resolve().relative_to(out.resolve()))
            data["synthesis_seconds"] = meta.get("synthesis_seconds")
            data["drc"] = drc_summary(meta)
        target = dest / split / name / "metrics.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=2) + "\n")
        n += 1
    print(f"{n} metrics.json files -> {dest}")


if __name__ == "__main__":
    main()

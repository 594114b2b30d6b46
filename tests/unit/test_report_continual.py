"""reta-report's class-incremental section: per-step accuracy merged over seeds, and the Fig. 6 plot."""

from __future__ import annotations

import json

from reta.reporting.continual import collect_steps, to_markdown


def _write(path, ipc, seeds, sets):
    path.mkdir(parents=True)
    m = {"dataset": "fashion_mnist", "ipc": ipc, "protocol": "continual", "student": "convnet", "method": "reta",
         "label": None, "seeds": seeds, "sets": {
             k: {"acc_last": [a[-1] for a in v], "steps": [{"acc_last": [a[i] for a in v]} for i in range(len(v[0]))]}
             for k, v in sets.items()}}
    (path / "metrics.json").write_text(json.dumps(m))
    return path / "metrics.json"


def test_steps_merge_seeds_across_runs_and_plot(tmp_path):
    paths = [_write(tmp_path / "a", 10, [0], {"random": [[0.9, 0.7]], "distilled": [[0.95, 0.8]]}),
             _write(tmp_path / "b", 10, [1], {"random": [[0.8, 0.5]], "distilled": [[0.85, 0.6]]}),
             _write(tmp_path / "c", 1, [0], {"distilled": [[0.7, 0.4]]})]
    rows = collect_steps(paths)
    assert rows[("fashion_mnist", "convnet", "test", "random", 10)] == {0: [0.9, 0.7], 1: [0.8, 0.5]}
    md = to_markdown(rows)
    assert "| random | 10 | 85.00 ± 5.00 | 60.00 ± 10.00 | 72.50 ± 7.50 | 2 |" in md
    assert "| reta | 1 | 70.00 ± 0.00 | 40.00 ± 0.00 | 55.00 ± 0.00 | 1 |" in md
    assert md.index("| reta | 1 |") < md.index("| random | 10 |")  # budgets ascending, random first within one


def test_report_writes_the_fig6_plot(tmp_path):
    from reta.report import tables

    from helpers import compose_cfg

    _write(tmp_path / "runs" / "a", 10, [0, 1], {"random": [[0.9, 0.7], [0.8, 0.6]],
                                                 "distilled": [[0.95, 0.8], [0.9, 0.7]]})
    tables(compose_cfg("report", [f"inputs=[{tmp_path / 'runs'}]", f"out={tmp_path / 'res'}",
                                  f"paths.output_dir={tmp_path}"]))
    assert (tmp_path / "res_continual.png").stat().st_size > 1000
    assert "class-incremental (protocol continual)" in (tmp_path / "res.md").read_text()

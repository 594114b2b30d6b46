"""reta-report's corruption-robustness table: clean accuracy, mCA and per-corruption means merged over seeds."""

from __future__ import annotations

import json

from reta.reporting.robustness import to_markdown


def _write(path, seeds, sets):
    path.mkdir(parents=True)
    m = {"dataset": "fashion_mnist", "ipc": 10, "protocol": "kd", "student": "convnet", "method": "reta",
         "label": None, "seeds": seeds, "sets": sets}
    (path / "metrics.json").write_text(json.dumps(m))
    return path / "metrics.json"


def _set(clean, noise, contrast):
    """Per seed: clean accuracy, and accuracies at severities (1, 5) of two corruptions."""
    return {"acc_last": clean, "robustness": {"severities": [1, 5], "per_corruption": {
        "gaussian_noise": {"per_seed": noise}, "contrast": {"per_seed": contrast}}}}


def test_robustness_table_merges_seeds_and_averages_corruptions(tmp_path):
    a = _write(tmp_path / "a", [0], {"random": _set([0.8], [[0.6, 0.4]], [[0.7, 0.3]]),
                                     "distilled": _set([0.9], [[0.8, 0.6]], [[0.9, 0.5]])})
    b = _write(tmp_path / "b", [1], {"random": _set([0.7], [[0.5, 0.3]], [[0.6, 0.2]])})
    c = _write(tmp_path / "c", [0], {"random": {"acc_last": [0.8]}})  # a run without robustness adds nothing
    md = to_markdown([a, b, c])
    # random: seed 0 mCA (0.5 + 0.5)/2 = 0.5, seed 1 (0.4 + 0.4)/2 = 0.4
    assert "| random | 75.00 ± 5.00 | 45.00 ± 5.00 | 45.00 ± 5.00 | 45.00 ± 5.00 | 2 |" in md
    assert "| reta | 90.00 ± 0.00 | 70.00 ± 0.00 | 70.00 ± 0.00 | 70.00 ± 0.00 | 1 |" in md
    assert md.index("| random |") < md.index("| reta |")
    assert "| method | clean | mCA | gaussian_noise | contrast | n |" in md
    assert to_markdown([c]) == ""


def test_report_cli_appends_the_tables(tmp_path):
    from reta.report import tables

    from helpers import compose_cfg

    _write(tmp_path / "runs" / "a", [0], {"random": _set([0.8], [[0.6, 0.4]], [[0.7, 0.3]]),
                                          "distilled": _set([0.9], [[0.8, 0.6]], [[0.9, 0.5]])})
    cfg = compose_cfg("report", [f"inputs=[{tmp_path / 'runs'}]", f"out={tmp_path / 'res'}",
                                 f"paths.output_dir={tmp_path}"])
    tables(cfg)
    md = (tmp_path / "res.md").read_text()
    assert "corruption robustness" in md and "DD-Ranking scores" in md
    assert "| reta | 10 | kd | convnet | 90.00 ± 0.00 | 10.00 ± 0.00 | – | – | – | 1 |" in md

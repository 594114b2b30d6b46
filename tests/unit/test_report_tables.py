"""reta-report aggregation: cells merge seeds across runs; Markdown/CSV carry mean ± std."""

from __future__ import annotations

import json

import pytest

from reta.errors import RetaError
from reta.reporting.tables import collect, find_metrics, to_csv, to_markdown


def _metrics(path, ipc, method, rand, dist=None, seeds=None, label=None, protocol="kd", split=None, iterations=None,
             scale=None, settings=None):
    sets = {"random": {"acc_last": rand, "acc_best": [a + 0.01 for a in rand], "seconds": [1.0] * len(rand)}}
    if dist is not None:
        sets["distilled"] = {"acc_last": dist, "acc_best": dist}
    path.mkdir(parents=True)
    m = {"dataset": "fashion_mnist", "ipc": ipc, "protocol": protocol, "student": "convnet", "method": method,
         "label": label, "sets": sets, "seeds": seeds or list(range(len(rand)))}
    if split is not None:
        m["eval_split"] = split
    if iterations is not None:
        m["synthesis_iterations"] = iterations
    if scale is not None:
        m["synthesis_scale"] = scale
    if settings is not None:  # {"protocol": …, "student": …} the students trained under
        m["protocol_config"], m["student_config"] = settings["protocol"], settings["student"]
    (path / "metrics.json").write_text(json.dumps(m))


def test_collect_merges_and_formats(tmp_path):
    _metrics(tmp_path / "a", 10, "fadrm", [0.80, 0.82], [0.84, 0.86])
    _metrics(tmp_path / "b", 10, "random", [0.84], seeds=[2])
    _metrics(tmp_path / "d", 10, "reta", [0.80, 0.82], [0.9, 0.9])  # same seeds 0, 1: random counted once
    _metrics(tmp_path / "c", 1, "fadrm", [0.5], [0.6])
    cells = collect(find_metrics([tmp_path]))
    by = {(c.method, c.ipc): c for c in cells}
    assert by[("random", 10)].acc_last == [0.80, 0.82, 0.84]
    mean, std = by[("random", 10)].mean_std()
    assert mean == pytest.approx(82.0) and std == pytest.approx(1.632993, rel=1e-5)
    assert by[("fadrm", 10)].mean_std()[0] == pytest.approx(85.0)
    md = to_markdown(cells)
    assert "| random | 50.00 ± 0.00 (n=1) | 82.00 ± 1.63 (n=3) |" in md
    assert "| fadrm | 60.00 ± 0.00 (n=1) | 85.00 ± 1.00 (n=2) |" in md
    rows = to_csv(cells).strip().splitlines()
    assert rows[0].startswith("dataset,ipc") and len(rows) == 1 + 5


def test_labels_keep_runs_of_one_method_apart(tmp_path):
    _metrics(tmp_path / "a", 10, "reta", [0.8], [0.84], label="reta lam=0.1")
    _metrics(tmp_path / "b", 10, "reta", [0.8], [0.70], label="reta lam=1.0")
    _metrics(tmp_path / "c", 10, "reta", [0.8], [0.90])
    by = {c.method: c for c in collect(find_metrics([tmp_path]))}
    assert sorted(by) == ["random", "reta", "reta lam=0.1", "reta lam=1.0"]
    assert by["reta lam=1.0"].acc_last == [0.70] and by["reta"].acc_last == [0.90]


def test_bad_inputs(tmp_path):
    with pytest.raises(RetaError, match="neither"):
        find_metrics([tmp_path / "missing"])
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "metrics.json").write_text("{}")
    with pytest.raises(RetaError, match="not a reta metrics.json"):
        collect(find_metrics([tmp_path]))


def test_published_column_and_sweep_plot(tmp_path):
    from reta.reporting.plots import plot_sweep, sweep_points
    from reta.reporting.published import load_published

    paths = []
    for lam, accs in ((0.0, [0.80, 0.82]), (0.1, [0.85, 0.87]), (1.0, [0.70, 0.72])):
        run = tmp_path / f"lam{lam}"
        (run / "distilled").mkdir(parents=True)
        (run / "distilled" / "meta.json").write_text(
            json.dumps({"method_config": {"residual": {"anchors": {"lam": lam}}}})
        )
        (run / "metrics.json").write_text(json.dumps({
            "dataset": "fashion_mnist", "ipc": 10, "protocol": "kd", "student": "convnet", "method": "reta",
            "seeds": [0, 1], "distilled": str(run / "distilled"),
            "sets": {"random": {"acc_last": [0.81, 0.83]}, "distilled": {"acc_last": accs}}}))
        paths.append(run / "metrics.json")
    pts, rand = sweep_points(paths, "residual.anchors.lam")
    assert [x for x, _ in pts] == [0.0, 0.1, 1.0] and pts[1][1] == [0.85, 0.87] and rand == [0.81, 0.83]
    baseline_only = tmp_path / "random" / "metrics.json"  # a sweep run with baseline=false takes its band from here
    _metrics(baseline_only.parent, 10, "random", [0.75, 0.77, 0.79])
    assert sweep_points([*paths, baseline_only], "residual.anchors.lam")[1] == [0.75, 0.77, 0.79]
    png = plot_sweep(paths, "residual.anchors.lam", tmp_path / "fig.png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(RetaError, match="no numeric"):
        sweep_points(paths, "residual.anchors.beta")
    pub = tmp_path / "published.csv"
    pub.write_text("# from the paper\ndataset,ipc,method,acc\nfashion_mnist,10,reta,88.5\n")
    md = to_markdown(collect(paths), load_published(pub))
    assert "[paper 88.5]" in md


def test_published_vs_reta_gives_the_difference_the_budget_and_only_the_published_protocol(tmp_path):
    from reta.reporting.published import comparison_table, load_published

    _metrics(tmp_path / "dsa1", 1, "dsa", [0.60, 0.62, 0.64], [0.70, 0.71, 0.72], protocol="dc", iterations=1000,
             scale="paper")
    _metrics(tmp_path / "dsa10", 10, "dsa", [0.80], [0.83], protocol="dc", iterations=100)
    _metrics(tmp_path / "dsa1h", 1, "dsa", [0.50], [0.90], protocol="hard", iterations=1000)  # not the published one
    _metrics(tmp_path / "dm1", 1, "dm", [0.60], [0.69], protocol="dc", iterations=20000, scale="cpu")
    _metrics(tmp_path / "snap", 1, "dsa", [0.60], [0.66], protocol="dc", iterations=25, label="dsa_it25")
    pub = tmp_path / "published.csv"
    pub.write_text("# sources\ndataset,ipc,method,acc,std,protocol,iterations\n"
                   "fashion_mnist,1,dsa,70.6,0.6,dc,1000\nfashion_mnist,10,dsa,84.6,0.3,dc,1000\n"
                   "fashion_mnist,1,dm,70.7,,,20000\nfashion_mnist,1,random,51.4,3.8,dc,\n")
    published = load_published(pub)
    assert published[("fashion_mnist", 1, "dm")].std is None and published[("fashion_mnist", 1, "dm")].protocol is None
    cells = collect(find_metrics([tmp_path]))
    table = comparison_table(cells, published)
    rows = [r for r in table.splitlines() if r.startswith("| fashion_mnist")]
    assert rows == [
        "| fashion_mnist | 1 | random | dc | convnet | 62.00 ± 1.63 (n=3) | 51.4 ± 3.8 | +10.60 | – | – | – |",
        "| fashion_mnist | 1 | dm | dc | convnet | 69.00 ± 0.00 (n=1) | 70.7 | -1.70 | 20000 it (published 20000) "
        "| **cpu** | 62.00 ± 1.63 |",  # the random subset of a (dataset, IPC, protocol, student): one cell over runs
        "| fashion_mnist | 1 | dsa | dc | convnet | 71.00 ± 0.82 (n=3) | 70.6 ± 0.6 | +0.40 | 1000 it (published 1000) "
        "| paper | 62.00 ± 1.63 |",
        "| fashion_mnist | 1 | dsa_it25 | dc | convnet | 66.00 ± 0.00 (n=1) | 70.6 ± 0.6 | -4.60 "
        "| 25 it (**2.5 %** of 1000) | – | 62.00 ± 1.63 |",  # a budget snapshot of the same run: compared by its method
        "| fashion_mnist | 10 | dsa | dc | convnet | 83.00 ± 0.00 (n=1) | 84.6 ± 0.3 | -1.60 "
        "| 100 it (**10 %** of 1000) | – | 80.00 ± 0.00 |",
    ]
    md = to_markdown(cells, published)
    assert md.count("[paper 70.6]") == 1, "the hard-label table of the same set gets no published number"
    assert "Not compared (measured under another protocol than the published number's): dsa IPC 1 under hard " \
        "(published under dc); random IPC 1 under hard (published under dc)." in table
    hard_only = comparison_table([c for c in cells if c.protocol == "hard"], published)
    assert "| fashion_mnist" not in hard_only and "dsa IPC 1 under hard" in hard_only
    assert comparison_table([c for c in cells if c.method == "dm"], {}) == ""
    _metrics(tmp_path / "dsa10b", 10, "dsa", [0.80], [0.84], protocol="dc", iterations=1000, seeds=[1])
    mixed = comparison_table(collect(find_metrics([tmp_path])), published)
    assert "| 100/1000 it (**mixed budgets**) |" in mixed, "runs of two budgets in one row must say so"
    (tmp_path / "bad.csv").write_text("dataset,ipc,method,acc\nfashion_mnist,1,dc,70\nfashion_mnist,1,dc,71\n")
    with pytest.raises(RetaError, match="two rows for fashion_mnist IPC 1 dc"):
        load_published(tmp_path / "bad.csv")
    (tmp_path / "bad.csv").write_text("dataset,ipc,method,acc,seeds\n")
    with pytest.raises(RetaError, match=r"unknown columns \['seeds'\]"):
        load_published(tmp_path / "bad.csv")
    (tmp_path / "bad.csv").write_text("dataset,ipc,method,acc,iterations\nfashion_mnist,1,dc,70,many\n")
    with pytest.raises(RetaError, match="bad row"):
        load_published(tmp_path / "bad.csv")


def test_side_by_side_puts_kd_and_hard_label_accuracy_of_the_same_sets_in_one_table(tmp_path):
    _metrics(tmp_path / "kd1", 1, "reta", [0.60], [0.65])
    _metrics(tmp_path / "hard1", 1, "reta", [0.40], [0.45], protocol="hard")
    _metrics(tmp_path / "kd10", 10, "reta", [0.80], [0.82])
    cells = collect(find_metrics([tmp_path]))
    separate = to_markdown(cells)
    assert "protocol kd," in separate and "protocol hard," in separate
    md = to_markdown(cells, side_by_side=["kd", "hard"])
    assert "protocols kd vs hard (same sets)" in md and md.count("###") == 1
    assert "| method | IPC 1 kd | IPC 1 hard | IPC 10 kd |" in md  # no hard run at IPC 10: no column
    assert "| reta | 65.00 ± 0.00 (n=1) | 45.00 ± 0.00 (n=1) | 82.00 ± 0.00 (n=1) |" in md
    assert "| random | 60.00 ± 0.00 (n=1) | 40.00 ± 0.00 (n=1) | 80.00 ± 0.00 (n=1) |" in md


def test_held_out_accuracies_are_never_merged_with_test_accuracies(tmp_path):
    _metrics(tmp_path / "test", 1, "reta", [0.60], [0.65])
    _metrics(tmp_path / "val", 1, "reta", [0.70], [0.75], split="holdout1000")
    cells = collect(find_metrics([tmp_path]))
    assert sorted((c.method, c.split) for c in cells) == [("random", "holdout1000"), ("random", "test"),
                                                          ("reta", "holdout1000"), ("reta", "test")]
    md = to_markdown(cells)
    assert md.count("###") == 2 and "accuracy on holdout1000 (held-out split of train, not test)" in md
    assert to_csv(cells).splitlines()[0].endswith(",split")


def test_report_cli_rejects_an_unknown_side_by_side_protocol(tmp_path):
    from omegaconf import OmegaConf

    from reta import report

    _metrics(tmp_path / "kd1", 1, "reta", [0.60], [0.65])
    cfg = OmegaConf.create({"inputs": [str(tmp_path)], "out": str(tmp_path / "r" / "results"), "published": None,
                            "plot": None, "side_by_side": ["kd", "hard"]})
    with pytest.raises(RetaError, match="side_by_side needs two or more of the inputs' protocols"):
        report.run(cfg)
    assert not (tmp_path / "r").exists()


def _probe_metrics(path, method, label=None):
    """A linear-probe metrics.json as ``reta-evaluate protocol=linear_probe protocol.inherit=true`` writes it."""
    path.mkdir(parents=True)
    sets = {"full": {"acc_last": [0.80], "acc_best": [0.80]},
            "random": {"acc_last": [0.10, 0.12], "acc_best": [0.10, 0.12]},
            "distilled": {"acc_last": [0.052, 0.054], "acc_best": [0.052, 0.054]},
            "random_inherited": {"acc_last": [0.30, 0.32], "acc_best": [0.30, 0.32]},
            "distilled_inherited": {"acc_last": [0.1121, 0.1121], "acc_best": [0.1121, 0.1121]}}
    m = {"dataset": "fashion_mnist", "ipc": 1, "protocol": "linear_probe", "student": "linear_probe@random",
         "method": method, "label": label, "sets": sets, "seeds": [0, 1]}
    (path / "metrics.json").write_text(json.dumps(m))


@pytest.mark.parametrize("order", [["a", "b"], ["b", "a"]])
def test_every_set_kind_keeps_its_own_row_whatever_the_input_order(tmp_path, order):
    _probe_metrics(tmp_path / "a", "sfm")
    _probe_metrics(tmp_path / "b", "random")  # a distilled set made with method=random
    cells = collect([tmp_path / d / "metrics.json" for d in order])
    by = {c.method: c for c in cells}
    assert sorted(by) == ["full data", "random", "random (distilled set)", "random (distilled set) (inherited)",
                          "random (inherited)", "sfm", "sfm (inherited)"]
    assert by["sfm"].acc_last == [0.052, 0.054]  # the distilled probe, not the inherited accuracy
    assert by["sfm (inherited)"].acc_last == [0.1121, 0.1121]
    assert by["full data"].acc_last == [0.80] and by["random"].acc_last == [0.10, 0.12]
    assert by["random (distilled set)"].acc_last == [0.052, 0.054]
    md = to_markdown(cells)
    assert "| full data | 80.00 ± 0.00 (n=1) |" in md and "| sfm | 5.30 ± 0.10 (n=2) |" in md
    assert "| sfm (inherited) | 11.21 ± 0.00 (n=2) |" in md


def test_published_vs_reta_compares_only_students_trained_under_the_committed_protocol(tmp_path):
    import copy

    from reta.evaluation import protocol_values
    from reta.reporting.published import committed_protocol, comparison_table, load_published

    dc = committed_protocol("dc")
    assert dc["protocol"]["epochs"] == 1001 and dc["student"]["kwargs"]["width"] == 128
    stored = {"protocol": protocol_values(dc["protocol"]), "student": dc["student"]}  # as metrics.json records them
    short, narrow, tested_often = (copy.deepcopy(stored) for _ in range(3))
    short["protocol"]["epochs"] = 300
    narrow["student"]["kwargs"]["width"] = 64
    del narrow["student"]["kwargs"]["first_padding"]
    tested_often["protocol"]["eval_every"] = 100  # when students are also tested: not what they train on
    _metrics(tmp_path / "ok", 1, "dsa", [0.60], [0.70], protocol="dc", settings=stored)
    _metrics(tmp_path / "often", 1, "dsa", [0.60], [0.71], protocol="dc", settings=tested_often, seeds=[1])
    _metrics(tmp_path / "short", 10, "dsa", [0.80], [0.83], protocol="dc", settings=short)
    _metrics(tmp_path / "narrow", 50, "dsa", [0.80], [0.85], protocol="dc", settings=narrow)
    pub = tmp_path / "published.csv"
    pub.write_text("dataset,ipc,method,acc,std,protocol\nfashion_mnist,1,dsa,70.6,0.6,dc\n"
                   "fashion_mnist,10,dsa,84.6,0.3,dc\nfashion_mnist,50,dsa,88.7,0.2,dc\n")
    table = comparison_table(collect(find_metrics([tmp_path])), load_published(pub))
    rows = [r for r in table.splitlines() if r.startswith("| fashion_mnist")]
    assert [r.split(" | ")[2] for r in rows] == ["dsa"] and "70.50 ± 0.50 (n=2)" in rows[0]
    assert "dsa IPC 10 under dc with protocol.epochs=300 (dc: 1001)" in table
    assert "dsa IPC 50 under dc with student.kwargs.first_padding=unset (dc: \"dc\"), " \
        "student.kwargs.width=64 (dc: 128)" in table
    pub.write_text("dataset,ipc,method,acc,protocol\nfashion_mnist,1,dsa,70.6,dcc\n")
    with pytest.raises(RetaError, match=r"unknown protocol\(s\) \['dcc'\]; valid: .*dc_noaug"):
        load_published(pub)

"""DD-Ranking scores (reta.reporting.ddranking): the formulas in fractions, against the paper's definition and, where
the ``ddranking`` package imports, against its own ``compute_metrics`` fed with fixed accuracies."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest

from reta.reporting import ddranking
from reta.reporting.tables import Cell, collect, find_metrics, row_name

# per-seed accuracies (fractions) of one set and its baselines: seeds 0, 1, 2
SYN_HARD = [0.61, 0.58, 0.64]
SYN_KD = [0.70, 0.72, 0.69]
RND_HARD = [0.55, 0.57, 0.52]
RND_KD = [0.66, 0.65, 0.68]
FULL_HARD = 0.91
SYN_NOAUG, RND_NOAUG = [0.50, 0.55, 0.53], [0.49, 0.47, 0.52]


def _paper_lrs(full, syn_hard, syn_p, rnd_p, lam=0.5):
    """DD-Ranking paper: α = λ·IOR − (1 − λ)·HLR, LRS = (e^α − e^−1)/(e − e^−1), per run, then mean."""
    vals = []
    for h, s, r in zip(syn_hard, syn_p, rnd_p):
        alpha = lam * (s - r) - (1 - lam) * (full - h)
        vals.append((math.exp(alpha) - math.exp(-1)) / (math.exp(1) - math.exp(-1)))
    return vals


def _cells():
    def cell(protocol, method, accs, student="s_hard", seeds=(0, 1, 2), ipc=10):
        kind = method if method in ("random", "full") else "distilled"  # the metrics.json set the row comes from
        c = Cell("fashion_mnist", ipc, protocol, student, row_name(kind, method), kind=kind)
        c.per_seed = {s: (a, a) for s, a in zip(seeds, accs)}
        return c

    return [cell("hard", "reta", SYN_HARD), cell("hard", "random", RND_HARD), cell("kd", "reta", SYN_KD, "s_kd"),
            cell("kd", "random", RND_KD, "s_kd"), cell("hard", "full", [FULL_HARD], seeds=(0,), ipc=1),
            cell("kd_noaug", "reta", SYN_NOAUG, "s_kd"), cell("kd_noaug", "random", RND_NOAUG, "s_kd")]


def test_lrs_follows_the_paper_formula_in_fractions():
    scores = {s.protocol: s for s in ddranking.compute(_cells(), "hard", 0.5, 0.5, {"kd": "kd_noaug"})}
    assert sorted(scores) == ["hard", "kd"]  # the no-augmentation twin is no row of its own
    kd, hard = scores["kd"], scores["hard"]
    assert kd.lrs == pytest.approx(_paper_lrs(FULL_HARD, SYN_HARD, SYN_KD, RND_KD))
    assert hard.lrs == pytest.approx(_paper_lrs(FULL_HARD, SYN_HARD, SYN_HARD, RND_HARD))
    assert kd.hlr == pytest.approx([FULL_HARD - a for a in SYN_HARD])
    assert kd.ior == pytest.approx([a - b for a, b in zip(SYN_KD, RND_KD)])
    assert all(0.0 < v < 1.0 for v in kd.lrs + hard.lrs)  # fractions keep the score inside [0, 1]
    beta = [0.5 * (a - b) + 0.5 * (c - d) for a, b, c, d in zip(SYN_KD, RND_KD, SYN_NOAUG, RND_NOAUG)]
    assert kd.ars == pytest.approx([(math.exp(b) - math.exp(-1)) / (math.e - math.exp(-1)) for b in beta])
    assert hard.ars == [] and not hard.missing  # no no-augmentation twin declared for hard: no ARS, nothing missing
    # the score's end points: α = 1 → 1, α = −1 → 0
    assert ddranking.robust_score(1.0) == pytest.approx(1.0) and ddranking.robust_score(-1.0) == pytest.approx(0.0)


def test_missing_runs_are_named_and_leave_blanks():
    cells = [c for c in _cells() if c.kind != "full"]
    scores = {s.protocol: s for s in ddranking.compute(cells, "hard", 0.5, 0.5, {"kd": "kd_other"})}
    assert scores["kd"].lrs == [] and scores["kd"].ior  # IOR needs no full-data run
    md = ddranking.to_markdown(list(scores.values()))
    assert "no full-data hard accuracy for student s_hard" in md
    assert "no kd_other-protocol runs of the set and the random subset (ARS)" in md
    acc = f"{100 * statistics.fmean(SYN_KD):.2f} ± {100 * statistics.pstdev(SYN_KD):.2f}"
    assert f"| reta | 10 | kd | s_kd | {acc} | 4.00 ± 2.45 | – | – | – | 3 |" in md


def test_report_reads_the_full_set_kind_as_its_own_row(tmp_path):
    def write(name, protocol, student, sets, seeds):
        (tmp_path / name).mkdir()
        m = {"dataset": "fashion_mnist", "ipc": 10, "protocol": protocol, "student": student, "method": "reta",
             "label": None, "seeds": seeds, "sets": {k: {"acc_last": v, "acc_best": v} for k, v in sets.items()}}
        (tmp_path / name / "metrics.json").write_text(json.dumps(m))

    write("hard", "hard", "s_hard", {"random": RND_HARD, "distilled": SYN_HARD, "full": [FULL_HARD]}, [0, 1, 2])
    write("kd", "kd", "s_kd", {"random": RND_KD, "distilled": SYN_KD}, [0, 1, 2])
    cells = collect(find_metrics([tmp_path]))
    assert {(c.protocol, c.method) for c in cells} == {("hard", "random"), ("hard", "reta"), ("hard", "full data"),
                                                       ("kd", "random"), ("kd", "reta")}
    kd = next(s for s in ddranking.compute(cells, "hard", 0.5, 0.5) if s.protocol == "kd")
    assert kd.lrs == pytest.approx(_paper_lrs(FULL_HARD, SYN_HARD, SYN_KD, RND_KD))


def _oracle(cls_name, accs_per_run, lam_name, lam):
    """Run ``ddranking``'s own ``compute_metrics`` with its training replaced by fixed accuracies (fractions)."""
    pytest.importorskip("ddranking", reason="ddranking 0.2.0 pins numpy<2; install it with --no-deps to compare")
    import ddranking.metrics as dm

    cls = getattr(dm, cls_name)
    module = __import__(cls.__module__, fromlist=["x"])
    obj = object.__new__(cls)
    obj.num_eval, obj.eval_full_data, obj.use_dist, obj.rank = len(accs_per_run), True, False, 0
    obj.ipc, obj.num_classes, obj.soft_label_mode, obj.label_type, obj.save_path = 1, 2, "M", "soft", None
    queue = [a for run in accs_per_run for a in run]
    take = lambda *a, **k: (queue.pop(0), 0.01)  # noqa: E731 — the next fixed accuracy, a dummy lr
    for name in ("_compute_hard_label_metrics_helper", "_compute_soft_label_metrics_helper",
                 "_compute_with_aug_metrics_helper", "_compute_without_aug_metrics_helper"):
        setattr(obj, name, take)
    obj._get_random_data_helper = lambda eval_iter: (None, None, None, None)[: 4 if "Aug" in cls_name else 3]
    mp = pytest.MonkeyPatch()
    for name in ("set_seed", "logging", "save_results"):
        mp.setattr(module, name, lambda *a, **k: None)
    try:
        return obj.compute_metrics(image_tensor=np.zeros(1), **{lam_name: lam})
    finally:
        mp.undo()
        assert not queue


def test_lrs_and_ars_equal_the_ddranking_package_fed_fractions():
    cells = _cells()
    scores = {s.protocol: s for s in ddranking.compute(cells, "hard", 0.3, 0.7, {"kd": "kd_noaug"})}
    # soft label: per run the package asks for syn hard, full hard, syn soft, random soft (in this order)
    runs = [(h, FULL_HARD, s, r) for h, s, r in zip(SYN_HARD, SYN_KD, RND_KD)]
    got = _oracle("LabelRobustScoreSoft", runs, "lrs_lambda", 0.3)
    assert got["label_robust_score_mean"] == pytest.approx(np.mean(scores["kd"].lrs))
    assert got["label_robust_score_std"] == pytest.approx(np.std(scores["kd"].lrs))
    assert got["hard_label_recovery_mean"] == pytest.approx(np.mean(scores["kd"].hlr))
    # hard label: syn hard, full hard, random hard (each LRS appended twice: same mean and std)
    runs = [(h, FULL_HARD, r) for h, r in zip(SYN_HARD, RND_HARD)]
    got = _oracle("LabelRobustScoreHard", runs, "lrs_lambda", 0.3)
    assert got["label_robust_score_mean"] == pytest.approx(np.mean(scores["hard"].lrs))
    assert got["label_robust_score_std"] == pytest.approx(np.std(scores["hard"].lrs))
    # ARS: syn with aug, random with aug, syn without, random without
    runs = list(zip(SYN_KD, RND_KD, SYN_NOAUG, RND_NOAUG))
    got = _oracle("AugmentationRobustScore", runs, "ars_lambda", 0.7)
    assert got["augmentation_robust_score_mean"] == pytest.approx(np.mean(scores["kd"].ars))


def test_each_student_is_compared_with_its_own_random_subset():
    cells = _cells()
    for c in [c for c in cells if c.protocol == "kd"]:  # a second KD student of the same set and random subset
        twin = Cell(c.dataset, c.ipc, c.protocol, "s_kd_wide", c.method, kind=c.kind)
        twin.per_seed = {s: (a + (0.1 if c.method == "reta" else 0.0), b) for s, (a, b) in c.per_seed.items()}
        cells.append(twin)
    scores = {(s.protocol, s.student): s for s in ddranking.compute(cells, "hard", 0.5, 0.5)}
    assert scores[("kd", "s_kd_wide")].ior == pytest.approx([i + 0.1 for i in scores[("kd", "s_kd")].ior])
    assert scores[("kd", "s_kd_wide")].hlr == scores[("kd", "s_kd")].hlr  # the same hard-label student and full run

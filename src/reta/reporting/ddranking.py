"""DD-Ranking scores of distilled sets from the runs reta already makes (github.com/NUS-HPC-AI-Lab/DD-Ranking,
``ddranking/metrics/{hard_label,soft_label,aug_robust}.py`` ``compute_metrics``; DD-Ranking paper, Eqs. 1–3).

Per evaluation seed ``s`` (accuracies as **fractions** in [0, 1]):

- HLR (hard-label recovery) ``= Acc(full train set, hard) − Acc(set, hard)``: the gap a hard-label student of the set
  leaves to the same student trained on the whole training set (reta's ``full`` set kind, ``reta-evaluate
  full_data.enabled=true protocol=hard``, computed once per student recipe and cached);
- IOR (improvement over random) ``= Acc(set, P) − Acc(random subset, P)`` under the set's protocol ``P``
  (``hard`` gives DD-Ranking's hard-label score, ``kd`` its soft-label one);
- LRS (label-robust score) ``= (e^α − e^−1) / (e − e^−1)`` with ``α = λ·IOR − (1 − λ)·HLR``, ``λ = lrs_lambda``;
- ARS (augmentation-robust score) ``= (e^β − e^−1) / (e − e^−1)`` with ``β = γ·(Acc(set, aug) − Acc(random, aug)) +
  (1 − γ)·(Acc(set, no aug) − Acc(random, no aug))``, ``γ = ars_lambda``, where a protocol is paired with its
  no-augmentation twin in ``reta-report``'s ``ddranking.no_aug_protocols``.

Scores are means and population stds over the seeds that every needed cell has; the full-data accuracy is the mean of
its own seeds. Divergences from the ``ddranking`` 0.2.0 package: it feeds **percentages** into the exponential (so
α of a few points gives LRS < 0 or > 1; here fractions, as in the paper's definition), appends each hard-label LRS
twice (harmless for mean and std), seeds from the wall clock and chooses the learning rate on the test set; reta
uses its own fixed seeds and protocols ("DD-Ranking formulas, reta protocol").
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field

from reta.reporting.tables import Cell, _split_note
from reta.utils.markdown import md_table


def robust_score(x: float) -> float:
    """``(e^x − e^−1) / (e − e^−1)``: maps x ∈ [−1, 1] (a difference of fractions) onto [0, 1]."""
    return (math.exp(x) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


def label_robust_score(hlr: float, ior: float, lrs_lambda: float) -> float:
    """LRS of one run from HLR and IOR in fractions (DD-Ranking ``LabelRobustScore*.compute_metrics``)."""
    return robust_score(lrs_lambda * ior - (1.0 - lrs_lambda) * hlr)


def augmentation_robust_score(with_aug: float, without_aug: float, ars_lambda: float) -> float:
    """ARS of one run from the set's margins over random with and without augmentation, in fractions
    (DD-Ranking ``AugmentationRobustScore.compute_metrics``)."""
    return robust_score(ars_lambda * with_aug + (1.0 - ars_lambda) * without_aug)


@dataclass
class SetScores:
    """DD-Ranking scores of one (dataset, IPC, protocol, method, split) cell; per-seed lists, fractions."""

    dataset: str
    ipc: int
    protocol: str
    student: str
    method: str
    split: str
    seeds: list[int]
    ior: list[float]
    acc: list[float] = field(default_factory=list)  # the set's own accuracy under ``protocol``, per seed
    hlr: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    ars: list[float] = field(default_factory=list)
    full_acc: float | None = None
    missing: list[str] = field(default_factory=list)


def _accs(cell: Cell) -> dict[int, float]:
    return {s: cell.per_seed[s][0] for s in cell.per_seed}


def _mean_std(vals: list[float]) -> tuple[float, float] | None:
    if not vals:
        return None
    return statistics.fmean(vals), statistics.pstdev(vals) if len(vals) > 1 else 0.0


def compute(cells: list[Cell], hard_protocol: str, lrs_lambda: float, ars_lambda: float,
            no_aug_protocols: Mapping[str, str] | None = None) -> list[SetScores]:
    """Scores of every distilled-set cell that has a random subset under its protocol and student (IOR); HLR and LRS
    where the set also has a ``hard_protocol`` cell and the dataset (same split, same hard-label student) a ``full``
    cell; ARS where the protocol's no-augmentation twin (``no_aug_protocols``) has the set and the random subset."""
    by = {(c.dataset, c.ipc, c.protocol, c.student, c.method, c.split): c for c in cells}
    full: dict[tuple, Cell] = {}
    for c in cells:  # the full-data accuracy does not depend on the IPC of the run that recorded it
        if c.kind == "full":
            full.setdefault((c.dataset, c.protocol, c.student, c.split), c)
    twins = dict(no_aug_protocols or {})
    out = []
    for c in cells:
        if c.kind != "distilled" or c.protocol in twins.values():  # scores of distilled sets only
            continue
        rnd = by.get((c.dataset, c.ipc, c.protocol, c.student, "random", c.split))
        if rnd is None:
            continue
        acc, racc = _accs(c), _accs(rnd)
        # the set's hard-label student: preferably one whose full-data accuracy is known
        hards = [h for h in cells if (h.dataset, h.ipc, h.protocol, h.method, h.split)
                 == (c.dataset, c.ipc, hard_protocol, c.method, c.split)]
        hards.sort(key=lambda h: ((c.dataset, hard_protocol, h.student, c.split) not in full, h.student != c.student))
        hard = hards[0] if hards else None
        full_cell = full.get((c.dataset, hard_protocol, hard.student, c.split)) if hard is not None else None
        seeds = sorted(set(acc) & set(racc) & (set(_accs(hard)) if hard is not None else set(acc)))
        s = SetScores(c.dataset, c.ipc, c.protocol, c.student, c.method, c.split, seeds,
                      [acc[k] - racc[k] for k in seeds], [acc[k] for k in seeds])
        if hard is None:
            s.missing.append(f"no {hard_protocol}-protocol run of the set")
        elif full_cell is None:
            s.missing.append(f"no full-data {hard_protocol} accuracy for student {hard.student}")
        else:
            s.full_acc = statistics.fmean(_accs(full_cell).values())
            hacc = _accs(hard)
            s.hlr = [s.full_acc - hacc[k] for k in seeds]
            s.lrs = [label_robust_score(h, i, lrs_lambda) for h, i in zip(s.hlr, s.ior)]
        twin = twins.get(c.protocol)
        if twin is not None:
            c0 = by.get((c.dataset, c.ipc, twin, c.student, c.method, c.split))
            r0 = by.get((c.dataset, c.ipc, twin, c.student, "random", c.split))
            if c0 is None or r0 is None:
                s.missing.append(f"no {twin}-protocol runs of the set and the random subset (ARS)")
            else:
                a0, ra0 = _accs(c0), _accs(r0)
                both = [k for k in seeds if k in a0 and k in ra0]
                s.ars = [augmentation_robust_score(s.ior[seeds.index(k)], a0[k] - ra0[k], ars_lambda) for k in both]
        out.append(s)
    return out


def _fmt(vals: list[float], scale: float = 1.0, digits: int = 3) -> str:
    ms = _mean_std(vals)
    return "–" if ms is None else f"{scale * ms[0]:.{digits}f} ± {scale * ms[1]:.{digits}f}"


def to_markdown(scores: list[SetScores]) -> str:
    """One table per (dataset, split): rows = (method, IPC, protocol), columns the set's accuracy and IOR/HLR in
    points, LRS/ARS in [0, 1]."""
    if not scores:
        return ""
    out: list[str] = []
    groups: dict[tuple, list[SetScores]] = {}
    for s in scores:
        groups.setdefault((s.dataset, s.split), []).append(s)
    for (dataset, split), group in groups.items():
        out.append(f"### {dataset} — DD-Ranking scores (DD-Ranking formulas, reta protocol){_split_note(split)}\n")
        rows, notes = [], {}
        for s in sorted(group, key=lambda s: (s.method, s.ipc, s.protocol, s.student)):
            rows.append([s.method, str(s.ipc), s.protocol, s.student, _fmt(s.acc, 100, 2), _fmt(s.ior, 100, 2),
                         _fmt(s.hlr, 100, 2), _fmt(s.lrs), _fmt(s.ars), str(len(s.seeds))])
            for m in s.missing:
                notes.setdefault(m, []).append(f"{s.method} IPC {s.ipc} {s.protocol}")
        out.append(md_table(["method", "IPC", "protocol", "student", "accuracy (%)", "IOR (points)", "HLR (points)",
                             "LRS", "ARS", "n"], rows))
        out.append("\naccuracy: the set's student under the row's protocol (the same seeds as the scores); IOR = "
                   "accuracy − the random subset's under the same protocol; HLR = full-data hard-label "
                   "accuracy − the set's hard-label accuracy; LRS, ARS ∈ [0, 1] from fractions (docs/evaluation.md).")
        for reason, where in sorted(notes.items()):
            out.append(f"Missing runs (– above): {reason} — {', '.join(where)}.")
        out.append("")
    return "\n".join(out)

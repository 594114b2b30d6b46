"""The README's accuracy + LRS table from the committed Table 1 runs (DD-Ranking formulas, reta protocol):

    .venv/bin/python experiments/table1/lrs_table.py experiments/table1/runs
"""
import statistics as st
import sys

from reta.reporting import ddranking
from reta.reporting.tables import collect, find_metrics
from reta.utils.markdown import md_table

cells = collect(find_metrics([sys.argv[1]]))
sc = {(s.method, s.ipc, s.protocol): s for s in ddranking.compute(cells, "hard", 0.5, 0.5, {})}
names = {"random": "random", "sre2l": "SRe2L", "rded": "RDED", "edc": "EDC", "cvdd": "CV-DD", "fadrm": "FADRM",
         "fadrm_plus": "FADRM+", "reta": "RETA"}
def f(v, scale, d):
    return "–" if not v else f"{scale*st.fmean(v):.{d}f} ± {scale*st.pstdev(v):.{d}f}"
rows = []
for ipc in (1, 10, 50):
    for m in names:
        if m == "random":
            continue
        k, h = sc.get((m, ipc, "kd")), sc.get((m, ipc, "hard"))
        if k is None and h is None:
            continue
        rows.append([names[m], str(ipc), f(k.acc if k else [], 100, 2), f(k.lrs if k else [], 1, 3),
                     f(h.acc if h else [], 100, 2), f(h.lrs if h else [], 1, 3), f(h.hlr if h else [], 100, 2)])
print(md_table(["method", "IPC", "KD acc (%)", "LRS (KD)", "hard acc (%)", "LRS (hard)", "HLR (points)"], rows))

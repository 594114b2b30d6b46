#!/bin/bash
# The published-comparison cells (experiments/published/README.md) as resumable jobs. A cell is <method>_ipc<N> with
# method dc | dsa | dm | mtt: distil with seed 0 at the published budget (resume=true: an interrupted run continues
# from its last checkpoint, a finished set is kept), evaluate 3 student seeds under the method's published protocol
# (dc → dc_noaug, dsa and dm → dc, mtt → dc_mtt; the random subset beside it under the same protocol), and copy the
# metrics into $RUNS/<cell>/ (default experiments/published/runs). Run it again to continue; finished steps are skipped.
#   nice bash experiments/published/run.sh outputs/published                       # CELLS default: dsa_ipc1 dc_ipc1
#   CELLS="dm_ipc1 mtt_ipc1" nice bash experiments/published/run.sh outputs/published
#   CELLS=dsa_ipc10 DISTILL_EXTRA="method.iterations=100" … OUT   # a fraction of the budget: say so in the table
# Variables: CELLS, RUNS, BIN (the reta-* commands, default .venv/bin), EXTRA (overrides for every command, e.g.
# paths.cache_dir=…), DISTILL_EXTRA (reta-distill only), THREADS (default 1).
set -u
cd "$(dirname "$0")/../.."
O=${1:-outputs/published}
B=${BIN:-.venv/bin}
C="num_threads=${THREADS:-1} progress_bar=false logger=none ${EXTRA:-}"
mkdir -p "$O"
for cell in ${CELLS:-dsa_ipc1 dc_ipc1}; do
  m=${cell%_ipc*}; ipc=${cell##*_ipc}
  case $m in
    dc) what="method=dc" p=dc_noaug ;;
    dsa) what="method=dsa" p=dc ;;
    dm) what="+experiment=published_dm" p=dc ;;
    mtt) what="method=mtt" p=dc_mtt ;;
    *) echo "unknown cell $cell (method dc, dsa, dm or mtt)"; exit 2 ;;
  esac
  out=$O/$cell
  echo "$(date +%T) $cell: distil ($what ipc=$ipc), then evaluate (protocol=$p, seeds 0-2)"
  [ -f "$out/distilled/meta.json" ] || $B/reta-distill $what ipc=$ipc seed=0 resume=true $C ${DISTILL_EXTRA:-} \
    paths.output_dir=$out > "$out.distill.log" 2>&1 || { echo "FAILED distill $cell (log: $out.distill.log)"; continue; }
  [ -f "$out/eval/metrics.json" ] || $B/reta-evaluate protocol=$p ipc=$ipc seeds=[0,1,2] distilled=$out/distilled $C \
    paths.output_dir=$out/eval > "$out.eval.log" 2>&1 || { echo "FAILED evaluate $cell (log: $out.eval.log)"; continue; }
  $B/python experiments/collect_runs.py "${RUNS:-experiments/published/runs}" "$out"
done

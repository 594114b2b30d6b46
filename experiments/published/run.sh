#!/bin/bash
# The published-comparison cells (experiments/published/README.md) as resumable jobs. A cell is <method>_ipc<N> with
# method dc | dsa | mtt | dm | idm | dm_iid | idm_iid (the DM family as +experiment=published_<method>): distil with
# seed 0 at the published budget (resume=true: an interrupted run continues from its last checkpoint, a finished set is
# kept), evaluate 3 student seeds under the method's published protocol (dc → dc_noaug, dsa and the DM family → dc,
# mtt → dc_mtt; the random subset beside it under the same protocol), and copy the metrics into $RUNS/<cell>/
# (default experiments/published/runs). Run it again to continue; finished steps are skipped.
#   nice bash experiments/published/run.sh outputs/published                       # CELLS default: dsa_ipc1 dc_ipc1
#   CELLS="dm_ipc1 mtt_ipc1" nice bash experiments/published/run.sh outputs/published
#   CELLS=dsa_ipc10 DISTILL_EXTRA="method.iterations=100" … OUT   # a fraction of the budget: say so in the table
#   CELLS=dsa_ipc1 SNAPSHOTS="100 200 500" … OUT   # accuracy against budget: those snapshots of the same run too
# Variables: CELLS, RUNS, BIN (the reta-* commands, default .venv/bin), EXTRA (overrides for every command, e.g.
# paths.data_dir=…), DISTILL_EXTRA (reta-distill only), THREADS (default 1), SNAPSHOTS (iterations: the run also
# writes the set after each, reta-distill snapshots=[…]; each is evaluated like the final set, as soon as it exists,
# and collected as <cell>_it<N>, its row labelled <method>_it<N>), STATE (default experiments/published/state: a cell with
# no checkpoint in OUT continues from the one saved there by save_state.sh, and one with no cache in OUT gets the saved
# expert buffer, so a run outlives the machine it started on), EVAL_ONLY=1 (evaluate and collect what exists, distil
# nothing: beside a running job, for its snapshots). Each cell distils with its own cache, OUT/<cell>/cache; the
# evaluations share OUT/eval_cache (the random-subset students, trained once per protocol, IPC and seed), which
# save_state.sh keeps in STATE/random_students and run.sh restores, so a new machine does not train them again.
set -u
cd "$(dirname "$0")/../.."
O=${1:-outputs/published}
B=${BIN:-.venv/bin}
C="num_threads=${THREADS:-1} progress_bar=false logger=none ${EXTRA:-}"
CELLS=${CELLS:-dsa_ipc1 dc_ipc1}
what_of() {  # the distil overrides and the evaluation protocol of method $1
  case $1 in
    dc) echo "method=dc dc_noaug" ;;
    dsa) echo "method=dsa dc" ;;
    dm|idm|dm_iid|idm_iid) echo "+experiment=published_$1 dc" ;;
    mtt) echo "method=mtt dc_mtt" ;;
  esac
}
for n in ${SNAPSHOTS:-}; do  # every snapshot iteration and every cell checked before any work
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "bad SNAPSHOTS entry '$n' (iterations separated by spaces, e.g. \"100 200 500\")"; exit 2; }
done
for cell in $CELLS; do
  ipc=${cell##*_ipc}
  if [ -z "$(what_of "${cell%_ipc*}")" ] || ! [[ $cell == *_ipc* && $ipc =~ ^[1-9][0-9]*$ ]]; then
    echo "unknown cell $cell (<method>_ipc<N>, method dc, dsa, mtt, dm, idm, dm_iid or idm_iid)"; exit 2
  fi
done
mkdir -p "$O"
SD=${STATE:-experiments/published/state}
EC=$O/eval_cache  # the evaluations' cache (paths.cache_dir of reta-evaluate)
if [ -d "$SD/random_students" ]; then  # saved random-subset students it lacks
  mkdir -p "$EC/random_students" && cp -n "$SD"/random_students/*.json "$EC/random_students/"
fi
for cell in $CELLS; do
  m=${cell%_ipc*}; ipc=${cell##*_ipc}
  read -r what p <<< "$(what_of "$m")"
  out=$O/$cell
  if [ -n "${EVAL_ONLY:-}" ]; then
    echo "$(date +%T) $cell: evaluate the sets that exist (protocol=$p, seeds 0-2), distil nothing"
  else
    echo "$(date +%T) $cell: distil ($what ipc=$ipc), then evaluate (protocol=$p, seeds 0-2)"
  fi
  snaps=$(echo ${SNAPSHOTS:-} | tr ' ' ,)
  st=$SD/$cell
  if [ ! -f "$out/distilled/meta.json" ]; then  # restore what OUT lacks: the run's checkpoint, its expert buffer
    if [ ! -f "$out/checkpoints/last.ckpt" ] && [ -f "$st/checkpoints/last.ckpt" ]; then
      echo "$(date +%T) $cell: continuing from the saved state in $st"
      mkdir -p "$out" && cp -r "$st/checkpoints" "$out/" && { [ ! -d "$st/snapshots" ] || cp -rn "$st/snapshots" "$out/"; }
    fi
    if [ ! -d "$out/cache" ] && [ -d "$st/cache" ]; then
      echo "$(date +%T) $cell: expert buffer from the saved state in $st"
      mkdir -p "$out" && cp -r "$st/cache" "$out/"
    fi
  fi
  # the cell's own cache (paths.cache_dir=OUT/<cell>/cache): an expert buffer lives with the run that needs it
  [ -n "${EVAL_ONLY:-}" ] || [ -f "$out/distilled/meta.json" ] || $B/reta-distill $what ipc=$ipc seed=0 resume=true "snapshots=[$snaps]" $C \
    paths.cache_dir=$out/cache ${DISTILL_EXTRA:-} paths.output_dir=$out > "$out.distill.log" 2>&1 \
    || echo "FAILED distill $cell (log: $out.distill.log)"
  for n in ${SNAPSHOTS:-}; do  # every snapshot written so far, even by a run stopped later
    ev=$O/${cell}_it$n snap=$out/snapshots/it$n/distilled
    if [ ! -f "$snap/meta.json" ]; then
      [ -f "$out/distilled/meta.json" ] && echo "no snapshot at iteration $n in $out (asked for after the run passed it)"
      continue
    fi
    [ -f "$ev/metrics.json" ] || $B/reta-evaluate protocol=$p ipc=$ipc seeds=[0,1,2] distilled=$snap label=${m}_it$n \
      $C paths.cache_dir=$EC paths.output_dir=$ev > "$ev.eval.log" 2>&1 || { echo "FAILED evaluate $cell snapshot $n (log: $ev.eval.log)"; continue; }
    $B/python experiments/collect_runs.py "${RUNS:-experiments/published/runs}" "$ev"
  done
  [ -f "$out/distilled/meta.json" ] || continue
  [ -f "$out/eval/metrics.json" ] || $B/reta-evaluate protocol=$p ipc=$ipc seeds=[0,1,2] distilled=$out/distilled $C \
    paths.cache_dir=$EC paths.output_dir=$out/eval > "$out.eval.log" 2>&1 || { echo "FAILED evaluate $cell (log: $out.eval.log)"; continue; }
  $B/python experiments/collect_runs.py "${RUNS:-experiments/published/runs}" "$out"
done

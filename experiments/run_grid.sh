#!/bin/bash
# The per-seed grid behind the CPU-scale tables: for every IPC × method × seed s in 0 1 2, distil with seed s (one
# cached teacher, teacher.seed=0) and train the student with seed s under each protocol of PROTOCOLS; the random real
# subset (a new subset per seed, identical protocol) once per IPC and protocol. Idempotent: finished cells are
# skipped, interrupted distillations resumed (resume=true; without checkpoints it starts afresh). Ends with
# reta-report over OUT (side by side when PROTOCOLS names two or more).
#   BN family (Table 1): nice bash experiments/run_grid.sh outputs/bn_family_fmnist
#   Table 3:            RANDOM_BASELINE=0 IPCS="10 50" METHODS="fadrm fadrm_drc fadrm_pta reta" nice bash experiments/run_grid.sh outputs/table3
#   Table 1, KD and hard-label students of the same sets:
#                       PROTOCOLS="kd hard" METHODS="fadrm_plus reta" nice bash experiments/run_grid.sh outputs/table1_grid
# Variables: IPCS (default "1 10 50"), SEEDS (distillation = student seeds of the methods, default "0 1 2"; the
# random rows always use seeds 0 1 2), METHODS (default "sre2l rded edc cvdd fadrm fadrm_plus reta"; "" = random rows only),
# PROTOCOLS (default "kd"), RANDOM_BASELINE (0 = no random rows), BIN (the reta-* commands, default .venv/bin),
# EXTRA (overrides added to every command, e.g. EXTRA=paths.cache_dir=/path/to/cache), EVAL_EXTRA (overrides added
# to the reta-evaluate commands only).
#   Table 2 (every set × the cross-architecture pool; resume=true keeps finished students, so it runs in pieces):
#                       IPCS=10 METHODS="rded edc cvdd fadrm_plus reta" \
#                         EVAL_EXTRA="eval_pool=cross_arch resume=true protocol.eval_every=200" \
#                         nice bash experiments/run_grid.sh outputs/table2_grid
# Layout under OUT: <method>_ipc<N>_s<S>/distilled (the set), …/eval (its kd student), <method>_ipc<N>_s<S>_<P> (its
# student under protocol P ≠ kd); random_ipc<N> (kd) and random_ipc<N>_<P>.
set -u
cd "$(dirname "$0")/.."
O=${1:-outputs/bn_family_fmnist}
B=${BIN:-.venv/bin}
C="num_threads=1 progress_bar=false logger=none ${EXTRA:-}"
E="${EVAL_EXTRA:-}"
# a finished student, or a finished pool when EVAL_EXTRA/EXTRA have no resume=true: with it, reta-evaluate checks the pool
# again, keeps every student trained under today's settings and refuses (naming the folder) one trained under others
finished() { [ -f "$1/metrics.json" ] || { [ -f "$1/cross_arch.json" ] && [[ " $E $C " != *" resume=true "* ]]; }; }
PROTOCOLS=${PROTOCOLS:-kd}
sfx() { [ "$1" = kd ] || echo "_$1"; }
mkdir -p "$O"
for ipc in ${IPCS:-1 10 50}; do
  for p in $PROTOCOLS; do
    out=$O/random_ipc$ipc$(sfx "$p")
    [ "${RANDOM_BASELINE:-1}" = 0 ] || finished "$out" || \
      $B/reta-evaluate ipc=$ipc seeds=[0,1,2] protocol=$p $C $E paths.output_dir=$out > "$out.log" 2>&1 || \
      echo "FAILED evaluate random ipc=$ipc protocol=$p"
  done
  for method in ${METHODS-sre2l rded edc cvdd fadrm fadrm_plus reta}; do
    for s in ${SEEDS:-0 1 2}; do
      out=$O/${method}_ipc${ipc}_s$s
      [ -f "$out/distilled/meta.json" ] || $B/reta-distill method=$method ipc=$ipc seed=$s +teacher.seed=0 resume=true $C \
        paths.output_dir=$out > "$out.distill.log" 2>&1 || echo "FAILED distill $method ipc=$ipc seed=$s"
      for p in $PROTOCOLS; do
        if [ "$p" = kd ]; then ev=$out/eval log=$out.eval.log; else ev=$out$(sfx "$p") log=$out$(sfx "$p").log; fi
        finished "$ev" || $B/reta-evaluate distilled=$out/distilled ipc=$ipc seeds=[$s] baseline=false \
          protocol=$p $C $E paths.output_dir=$ev > "$log" 2>&1 || echo "FAILED evaluate $method ipc=$ipc seed=$s protocol=$p"
      done
    done
  done
done
side=$(echo $PROTOCOLS | tr ' ' ,)
[ "$side" = "${side#*,}" ] && side="" || side="side_by_side=[$side]"
$B/reta-report inputs=[$O] out=$O/results $side

#!/bin/bash
# DRC at IPC 1: RETA variants vs FADRM+ with the KD protocol, one cell = distil with seed s (one cached
# teacher, teacher.seed=0) + one KD student with seed s. SPLIT=holdout measures on a fixed 1000-per-class held-out
# split of train (holdout_per_class=1000: excluded from synthesis and from the random subset) to choose the setting;
# SPLIT=test measures the chosen setting on the test split. Idempotent (finished cells are skipped).
#   SPLIT=holdout VARIANTS="fadrm_plus reta reta_m0.02 reta_m0.1 reta_c0.1 reta_c0.5" bash experiments/drc_ipc1/run.sh OUT
#   SPLIT=test VARIANTS="fadrm_plus reta" bash experiments/drc_ipc1/run.sh OUT
# Single-teacher analogue (FADRM ± DRC; at IPC 1 PTA is off, so RETA = FADRM+ + DRC there):
#   SEEDS="0 1" SPLIT=holdout VARIANTS="fadrm fadrm_drc fadrm_drc_m0.1 fadrm_drc_c0.5" bash experiments/drc_ipc1/run.sh OUT
# RDED's crop area at IPC 1 (experiments/table1/README.md):
#   SPLIT=holdout VARIANTS="rded rded_s0.5 rded_s1" bash experiments/drc_ipc1/run.sh outputs/rded_ipc1
# PROTOCOL=hard evaluates the same sets (SETS=dir of an earlier run) with hard labels.
# IPC=50 runs the same study at another IPC (experiments/drc_ipc50):
#   IPC=50 SEEDS=0 SPLIT=holdout PROTOCOL=hard RANDOM_BASELINE=0 VARIANTS="fadrm_plus reta reta_pc reta_nodrc" \
#     bash experiments/drc_ipc1/run.sh outputs/drc_ipc50
set -u
cd "$(dirname "$0")/../.."
BIN=${BIN:-.venv/bin}
O=${1:-outputs/drc_ipc1}
SPLIT=${SPLIT:-holdout}
PROTOCOL=${PROTOCOL:-kd}
IPC=${IPC:-1}
C="num_threads=1 progress_bar=false logger=none ${CACHE:+paths.cache_dir=$CACHE}"
H=""
[ "$SPLIT" = holdout ] && H="holdout_per_class=1000"
declare -A V=(
  [fadrm_plus]="method=fadrm_plus"
  [fadrm]="method=fadrm"
  [fadrm_drc]="method=fadrm_drc"
  [fadrm_drc_m0.1]="method=fadrm_drc method.residual.anchors.keep_margin=0.1"
  [fadrm_drc_c0.5]="method=fadrm_drc method.residual.anchors.confidence_weight=0.5"
  [reta]="method=reta"
  [reta_m0]="method=reta method.residual.anchors.keep_margin=0.0"
  [reta_m0.02]="method=reta method.residual.anchors.keep_margin=0.02"
  [reta_m0.1]="method=reta method.residual.anchors.keep_margin=0.1"
  [reta_m0.3]="method=reta method.residual.anchors.keep_margin=0.3"
  [reta_c0.1]="method=reta method.residual.anchors.confidence_weight=0.1"
  [reta_c0.5]="method=reta method.residual.anchors.confidence_weight=0.5"
  [reta_pc]="method=reta method.residual.anchors.reuse=per_connection"
  [reta_nodrc]="method=reta method.residual.anchors.enabled=false"
  [reta_drc]="method=reta method.residual.anchors.enabled=true"  # DRC on (off in the Fashion-MNIST reta config)
  [reta_nopta]="method=reta method.callbacks.pta.enabled=false"
  [rded]="method=rded"                                  # RDED's candidate crops: area 8-100 % (its default)
  [rded_s0.5]="method=rded method.crop_scale=[0.5,1.0]"  # larger crops only
  [rded_s1]="method=rded method.crop_scale=[1.0,1.0]"    # whole images: the most confident of mipc per class
)
mkdir -p "$O/$SPLIT"
out=$O/$SPLIT/random_$PROTOCOL
[ "${RANDOM_BASELINE:-1}" = 0 ] || [ -f "$out/metrics.json" ] || $BIN/reta-evaluate ipc=$IPC seeds=[$(echo ${SEEDS:-0 1 2} | tr ' ' ,)] protocol=$PROTOCOL $H $C \
  paths.output_dir=$out > "$out.log" 2>&1 || echo "FAILED random"
for name in ${VARIANTS:-fadrm_plus reta}; do
  for s in ${SEEDS:-0 1 2}; do
    out=$O/$SPLIT/${name}_s$s
    [ -f "$out/distilled/meta.json" ] || $BIN/reta-distill ${V[$name]} ipc=$IPC seed=$s +teacher.seed=0 $H $C \
      paths.output_dir=$out > "$out.distill.log" 2>&1 || echo "FAILED distill $name seed=$s"
    [ -f "$out/eval_$PROTOCOL/metrics.json" ] || $BIN/reta-evaluate distilled=$out/distilled ipc=$IPC seeds=[$s] \
      baseline=false label=$name protocol=$PROTOCOL $H $C paths.output_dir=$out/eval_$PROTOCOL > "$out.eval_$PROTOCOL.log" 2>&1 \
      || echo "FAILED evaluate $name seed=$s"
    echo "$(date -u +%T) $SPLIT $name seed $s $PROTOCOL done"
  done
done

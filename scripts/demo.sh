#!/bin/bash
# `make demo`: Fashion-MNIST from nothing cached to a RETA vs FADRM+ vs random table in a few minutes on a 2-core CPU.
#   1. the three FADRM+ teachers (ConvNet-3 w32, ConvNet-3 w16, ConvNet-4 w16) with a short demo recipe
#      (DEMO_TEACHER_EPOCHS SGD epochs instead of 10), the w32 one in the foreground, the two w16 ones behind it;
#   2. RETA (foreground) and FADRM+ (background) sets at IPC DEMO_IPC;
#   3. KD students (200 epochs, seed 0): RETA set + a random real subset (foreground); FADRM+ set, then the topology
#      diagnostics of the RETA set (Betti curves, persistence images), in the background;
#   4. the table.
# Foreground jobs show Lightning progress bars (teacher epochs, synthesis steps, student epochs); background jobs
# print one line when they finish and log to outputs/demo/logs/. Teachers are cached in CACHE (not retrained).
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${OUT:-outputs/demo}
CACHE=${CACHE:-.cache/reta}
IPC=${DEMO_IPC:-5}
EPOCHS=${DEMO_TEACHER_EPOCHS:-1}
COMMON=(dataset=fashion_mnist seed=0 +teacher.seed=0 num_threads=1 "recipe.epochs=$EPOCHS" "paths.cache_dir=$CACHE")
AGAIN=(overwrite=true)  # a second `make demo` replaces its own sets and metrics (teachers stay cached)
BG=(progress_bar=false)
mkdir -p "$OUT/logs"
T0=$(date +%s)
stamp() { echo "[demo $(( $(date +%s) - T0 )) s] $*"; }
wait_bg() {  # wait for one background job; show the tails of its logs if it failed
  local pid=$1 name=$2 log
  shift 2
  if wait "$pid"; then stamp "$name done"; return; fi
  stamp "$name FAILED — last lines of its logs:"
  for log in "$@"; do [ -f "$log" ] && { echo "== $log"; tail -20 "$log"; }; done
  exit 1
}

stamp "1/4 teachers (demo recipe: $EPOCHS SGD epoch(s) each instead of 10; cached in $CACHE)"
( $BIN/reta-squeeze "${COMMON[@]}" "${BG[@]}" model=convnet_d3_w32 model.kwargs.width=16 \
      paths.output_dir="$OUT/teachers/convnet_d3_w16" \
  && $BIN/reta-squeeze "${COMMON[@]}" "${BG[@]}" model=convnet_d3_w32 model.kwargs.width=16 model.kwargs.depth=4 \
      paths.output_dir="$OUT/teachers/convnet_d4_w16" ) > "$OUT/logs/teachers_w16.log" 2>&1 &
W16=$!
stamp "  ConvNet-3 w16 and ConvNet-4 w16 train in the background (log: $OUT/logs/teachers_w16.log); ConvNet-3 w32 here:"
$BIN/reta-squeeze "${COMMON[@]}" model=convnet_d3_w32 paths.output_dir="$OUT/teachers/convnet_d3_w32"
wait_bg $W16 "ConvNet-3 w16 + ConvNet-4 w16 teachers" "$OUT/logs/teachers_w16.log"

stamp "2/4 synthesis at IPC $IPC: FADRM+ in the background (log: $OUT/logs/fadrm_plus_distill.log), RETA here:"
$BIN/reta-distill "${COMMON[@]}" "${BG[@]}" "${AGAIN[@]}" method=fadrm_plus ipc=$IPC paths.output_dir="$OUT/fadrm_plus" \
  > "$OUT/logs/fadrm_plus_distill.log" 2>&1 &
FP=$!
$BIN/reta-distill "${COMMON[@]}" "${AGAIN[@]}" method=reta ipc=$IPC paths.output_dir="$OUT/reta"
wait_bg $FP "FADRM+ synthesis" "$OUT/logs/fadrm_plus_distill.log"

stamp "3/4 KD students (seed 0) + topology: FADRM+ student, then the RETA set's topology diagnostics in the background (logs: $OUT/logs/fadrm_plus_eval.log, topology.log); RETA set and a random real subset here:"
( $BIN/reta-evaluate "${COMMON[@]}" "${BG[@]}" "${AGAIN[@]}" ipc=$IPC seeds=[0] baseline=false \
      distilled="$OUT/fadrm_plus/distilled" paths.output_dir="$OUT/fadrm_plus/eval" > "$OUT/logs/fadrm_plus_eval.log" 2>&1 \
  && $BIN/reta-report topology.run_dir="$OUT/reta" topology.max_classes=10 "paths.cache_dir=$CACHE" \
      paths.output_dir="$OUT/logs/topology" > "$OUT/logs/topology.log" 2>&1 ) &
FE=$!
$BIN/reta-evaluate "${COMMON[@]}" "${AGAIN[@]}" ipc=$IPC seeds=[0] distilled="$OUT/reta/distilled" paths.output_dir="$OUT/reta/eval"
wait_bg $FE "FADRM+ student and topology diagnostics" "$OUT/logs/fadrm_plus_eval.log" "$OUT/logs/topology.log"

stamp "4/4 the table"
$BIN/reta-report "inputs=[$OUT/reta/eval,$OUT/fadrm_plus/eval]" out="$OUT/results" paths.output_dir="$OUT/logs/report" \
  > "$OUT/logs/report.log" 2>&1 \
  || { tail -20 "$OUT/logs/report.log"; exit 1; }
echo
sed 1,2d "$OUT/results.md"
echo "(one student seed: differences of about one point are within seed noise — see experiments/table1 for 3 seeds)"
echo "image grids:    $OUT/reta/distilled/grid.png  $OUT/fadrm_plus/distilled/grid.png"
echo "topology plot:  $OUT/reta/diagnostics/topology/betti_summary.png"
echo "tables:         $OUT/results.md  $OUT/results.csv"
stamp "finished"

#!/bin/bash
# The per-seed grid behind the CPU-scale tables: for every IPC × method × seed s in 0 1 2, distil with seed s (one
# cached teacher, teacher.seed=0) and train the KD student with seed s; the random real subset (a new subset per seed,
# identical protocol) once per IPC. Idempotent: finished cells are skipped, interrupted ones resumed (resume=true;
# without checkpoints it starts afresh). Ends with reta-report over OUT.
#   Table 1 / issue 3:  nice bash experiments/run_grid.sh outputs/bn_family_fmnist
#   Table 3 / issue 4:  RANDOM_BASELINE=0 IPCS="10 50" METHODS="fadrm fadrm_drc fadrm_pta reta" nice bash experiments/run_grid.sh outputs/table3
set -u
cd "$(dirname "$0")/.."
O=${1:-outputs/bn_family_fmnist}
C="num_threads=1 progress_bar=false logger=none"
mkdir -p "$O"
for ipc in ${IPCS:-1 10 50}; do
  out=$O/random_ipc$ipc
  [ "${RANDOM_BASELINE:-1}" = 0 ] || [ -f "$out/metrics.json" ] || \
    .venv/bin/reta-evaluate ipc=$ipc seeds=[0,1,2] $C paths.output_dir=$out > "$out.log" 2>&1
  for method in ${METHODS:-sre2l fadrm fadrm_plus reta}; do
    for s in 0 1 2; do
      out=$O/${method}_ipc${ipc}_s$s
      [ -f "$out/distilled/meta.json" ] || .venv/bin/reta-distill method=$method ipc=$ipc seed=$s +teacher.seed=0 resume=true $C \
        paths.output_dir=$out > "$out.distill.log" 2>&1 || echo "FAILED distill $method ipc=$ipc seed=$s"
      [ -f "$out/eval/metrics.json" ] || .venv/bin/reta-evaluate distilled=$out/distilled ipc=$ipc seeds=[$s] baseline=false \
        $C paths.output_dir=$out/eval > "$out.eval.log" 2>&1 || echo "FAILED evaluate $method ipc=$ipc seed=$s"
    done
  done
done
.venv/bin/reta-report inputs=[$O] out=$O/results

#!/bin/bash
# Fashion-MNIST, KD protocol (ConvNet-3 w32 teacher and student), seeds 0-2, IPC 1/10/50:
# random real subset vs SRe2L vs FADRM vs FADRM+ (issue 3). Idempotent: finished cells are skipped.
#   nice bash experiments/bn_family_fmnist/run_grid.sh [OUT]      (IPCS="1 10" METHODS="fadrm" to restrict)
set -u
cd "$(dirname "$0")/../.."
O=${1:-outputs/bn_family_fmnist}
C="num_threads=1 progress_bar=false logger=none"
mkdir -p "$O"
for ipc in ${IPCS:-1 10 50}; do
  out=$O/random_ipc$ipc   # a new random subset per seed, under the identical protocol
  [ -f "$out/metrics.json" ] || .venv/bin/reta-evaluate ipc=$ipc seeds=[0,1,2] $C paths.output_dir=$out > "$out.log" 2>&1
  for method in ${METHODS:-sre2l fadrm fadrm_plus}; do
    for s in 0 1 2; do
      out=$O/${method}_ipc${ipc}_s$s   # distillation seed s (one cached teacher: teacher.seed=0), student seed s
      [ -f "$out/distilled/meta.json" ] || .venv/bin/reta-distill method=$method ipc=$ipc seed=$s +teacher.seed=0 $C \
        paths.output_dir=$out > "$out.distill.log" 2>&1 || echo "FAILED distill $method ipc=$ipc seed=$s"
      [ -f "$out/eval/metrics.json" ] || .venv/bin/reta-evaluate distilled=$out/distilled ipc=$ipc seeds=[$s] baseline=false \
        $C paths.output_dir=$out/eval > "$out.eval.log" 2>&1 || echo "FAILED evaluate $method ipc=$ipc seed=$s"
    done
  done
done
python experiments/bn_family_fmnist/summarize.py "$O"

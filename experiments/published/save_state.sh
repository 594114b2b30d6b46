#!/bin/bash
# Save the resume state of every unfinished cell under OUT (run.sh's output folder) into STATE (default
# experiments/published/state/<cell>/: its checkpoints/last.ckpt and run.json, its snapshots/, and its expert buffer,
# cache/experts/, finished or in progress), so that the run continues on another machine: run.sh copies a cell's saved
# checkpoint back when OUT has no checkpoint for it, and its saved cache when OUT has none. A cell whose distilled set
# is finished has its saved state removed (its metrics are collected under runs/). A checkpoint is copied only when it
# reads as a complete archive (it may be mid-write), and each cell's state is replaced atomically. The random-subset
# students of the evaluations (OUT/eval_cache/random_students, each a finished JSON result) go to STATE/random_students.
#   bash experiments/published/save_state.sh outputs/published && git add experiments/published/state
set -u
cd "$(dirname "$0")/../.."
O=${1:?usage: save_state.sh OUT (the folder run.sh writes)}
S=${STATE:-experiments/published/state}
B=${BIN:-.venv/bin}
[ -d "$O" ] || { echo "no folder $O"; exit 2; }
mkdir -p "$S"
for out in "$O"/*; do
  cell=${out##*/}
  if [ -f "$out/distilled/meta.json" ]; then  # finished (a finished run has deleted its checkpoint)
    [ -d "$S/$cell" ] && rm -rf "${S:?}/$cell" && echo "$cell: finished, saved state removed"
    continue
  fi
  [ -f "$out/checkpoints/last.ckpt" ] || [ -d "$out/cache/experts" ] || continue
  tmp=$(mktemp -d "$S/.$cell.XXXX")
  chmod 755 "$tmp"
  if [ -f "$out/checkpoints/last.ckpt" ]; then
    mkdir -p "$tmp/checkpoints" && cp "$out/checkpoints/last.ckpt" "$out/checkpoints/run.json" "$tmp/checkpoints/"
    if ! $B/python -m zipfile -t "$tmp/checkpoints/last.ckpt" > /dev/null 2>&1; then
      echo "$cell: checkpoint is being written, not saved this time"; rm -rf "$tmp"; continue
    fi
  fi
  [ -d "$out/snapshots" ] && cp -r "$out/snapshots" "$tmp/"
  # each expert (expert_<i>.pt) is written atomically once trained: the files are complete, the writers' temporary
  # files and folders (.<name>.<hex>.tmp, .<name>.tmp-<tag>, .<name>.old-<tag>) are left out
  if [ -d "$out/cache/experts" ]; then
    mkdir -p "$tmp/cache" && cp -r "$out/cache/experts" "$tmp/cache/"
    find "$tmp/cache" -depth \( -name '.*.tmp' -o -name '.*.tmp-*' -o -name '.*.old-*' \) -exec rm -rf {} +
  fi
  rm -rf "${S:?}/.$cell.old"
  [ -d "$S/$cell" ] && mv "$S/$cell" "$S/.$cell.old"
  mv "$tmp" "$S/$cell" && rm -rf "${S:?}/.$cell.old"
  echo "$cell: saved ($(du -sh "$S/$cell" | cut -f1))"
done
rs=$O/eval_cache/random_students  # cached results are written atomically: every *.json is complete
if compgen -G "$rs/*.json" > /dev/null; then
  mkdir -p "$S/random_students" && cp -u "$rs"/*.json "$S/random_students/"
  echo "random_students: $(ls "$S/random_students" | wc -l) saved"
fi

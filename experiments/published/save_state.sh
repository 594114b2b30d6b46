#!/bin/bash
# Save the resume state of every unfinished cell under OUT (run.sh's output folder) into STATE (default
# experiments/published/state/<cell>/: its checkpoints/last.ckpt and run.json, and its snapshots/), so that the run
# continues on another machine: run.sh copies a cell's saved state back when OUT has no checkpoint for it. A cell whose
# distilled set is finished has its saved state removed (its metrics are collected under runs/). A checkpoint is
# copied only when it reads as a complete archive (it may be mid-write), and each cell's state is replaced atomically.
#   bash experiments/published/save_state.sh outputs/published && git add experiments/published/state
set -u
cd "$(dirname "$0")/../.."
O=${1:?usage: save_state.sh OUT (the folder run.sh writes)}
S=${STATE:-experiments/published/state}
B=${BIN:-.venv/bin}
[ -d "$O" ] || { echo "no folder $O"; exit 2; }
mkdir -p "$S"
for ck in "$O"/*/checkpoints/last.ckpt; do
  [ -f "$ck" ] || continue
  out=${ck%/checkpoints/last.ckpt}; cell=${out##*/}
  if [ -f "$out/distilled/meta.json" ]; then
    [ -d "$S/$cell" ] && rm -rf "${S:?}/$cell" && echo "$cell: finished, saved state removed"
    continue
  fi
  tmp=$(mktemp -d "$S/.$cell.XXXX")
  chmod 755 "$tmp" && mkdir -p "$tmp/checkpoints"
  cp "$ck" "$out/checkpoints/run.json" "$tmp/checkpoints/"
  if ! $B/python -m zipfile -t "$tmp/checkpoints/last.ckpt" > /dev/null 2>&1; then
    echo "$cell: checkpoint is being written, not saved this time"; rm -rf "$tmp"; continue
  fi
  [ -d "$out/snapshots" ] && cp -r "$out/snapshots" "$tmp/"
  rm -rf "${S:?}/.$cell.old"
  [ -d "$S/$cell" ] && mv "$S/$cell" "$S/.$cell.old"
  mv "$tmp" "$S/$cell" && rm -rf "${S:?}/.$cell.old"
  echo "$cell: saved ($(du -sh "$S/$cell" | cut -f1))"
done

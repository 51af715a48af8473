#!/usr/bin/env bash
# Trains the model that ships in the package and packs it with its card:
#   1. scripts/quality_per_minute.py trains $PRESET (seed $SEED) in stages to 10, 30 and
#      $MINUTES wall-clock minutes (default: the recipe that won
#      docs/benchmarks/quality_per_minute.md at 10 minutes, for 60 minutes), scoring each stage:
#      docs/benchmarks/packaged_$PRESET.md shows what the extra minutes bought. It shares the
#      benchmark's runs (runs/quality_per_minute), so a stage the benchmark already trained is
#      reused, and the benchmark's 30-minute row for this run comes from the same training;
#   2. spade-tf pack: the moving average as float16, the benchmark's built-in segmenter and the
#      card (mIoU, KID, samples measured on the packed weights) into spade_tf/pretrained/$PRESET.
# Run it on an otherwise idle machine: the card states the minutes and the steps they bought.
# A re-run with more MINUTES resumes the same run; delete $WORKDIR for a fresh one.
#   bash scripts/train_packaged_model.sh
#   PRESET=oasis_clade_light MINUTES=90 bash scripts/train_packaged_model.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_venv.sh run
PRESET="${PRESET:-synthscapes_light}"
MINUTES="${MINUTES:-60}"
SEED="${SEED:-0}"
WORKDIR="${WORKDIR:-runs/quality_per_minute}"
OUT="${OUT:-spade_tf/pretrained/$PRESET}"
marks=(10 30 "$MINUTES")
stage=(scripts/quality_per_minute.py --recipes "$PRESET" --seeds "$SEED" --minutes "${marks[@]}"
       --workdir "$WORKDIR" --name "packaged_$PRESET")
.venv/bin/python "${stage[@]}"
.venv/bin/spade-tf pack --checkpoint "$WORKDIR/${PRESET}_seed$SEED" --segmenter "$WORKDIR/segmenter" \
  --out "$OUT" --minutes "$MINUTES" --overwrite \
  --train-command "spade-tf train --config $PRESET --set train.seed=$SEED --max-minutes M, resumed at M = ${marks[*]} (${stage[*]})"
du -sh "$OUT"

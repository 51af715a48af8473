#!/usr/bin/env bash
# Trains the model that ships in the package and packs it with its card:
#   1. spade-tf train --config $PRESET for $MINUTES wall-clock minutes (default: the recipe that
#      won docs/benchmarks/quality_per_minute.md at 10 minutes, for 60 minutes);
#   2. the built-in segmenter that scores it (reused when present);
#   3. spade-tf pack: the moving average as float16, the segmenter and the card (mIoU, KID,
#      samples measured on the packed weights) into spade_tf/pretrained/$PRESET.
# Run it on an otherwise idle machine: the card states the minutes and the steps they bought.
# A re-run resumes the same run (more minutes); delete $WORKDIR for a fresh one.
#   bash scripts/train_packaged_model.sh
#   PRESET=oasis_clade_light MINUTES=90 bash scripts/train_packaged_model.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_venv.sh run
PRESET="${PRESET:-synthscapes_light}"
MINUTES="${MINUTES:-60}"
SEED="${SEED:-0}"
WORKDIR="${WORKDIR:-runs/packaged_$PRESET}"
SEGMENTER="${SEGMENTER:-runs/segmenter_quickstart}"
OUT="${OUT:-spade_tf/pretrained/$PRESET}"
train=(spade-tf train --config "$PRESET" --workdir "$WORKDIR" --max-minutes "$MINUTES" --set "train.seed=$SEED")
".venv/bin/${train[0]}" "${train[@]:1}"
[ -f "$SEGMENTER/segmenter.json" ] || .venv/bin/spade-tf train-segmenter --config quickstart --out "$SEGMENTER" --steps 800
.venv/bin/spade-tf pack --checkpoint "$WORKDIR" --segmenter "$SEGMENTER" --out "$OUT" \
  --minutes "$MINUTES" --train-command "${train[*]}" --overwrite
du -sh "$OUT"

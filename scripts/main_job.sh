#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, train on the built-in synthscapes data for
# about 10 minutes (MINUTES=... to change) with the recipe that scored best at 10 minutes in
# docs/benchmarks/quality_per_minute.md (PRESET=... to change), leave samples and a checkpoint in the run folder,
# export the generator (SavedModel for TF Serving + TFLite fp32/fp16/dynamic int8, each checked
# against Keras), and synthesize a sheet from held-out label maps with the exported models.
# Re-running continues the same run from its latest checkpoint and exports the next version.
#   bash scripts/main_job.sh            # runs/quickstart
#   WORKDIR=runs/other MINUTES=30 bash scripts/main_job.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_venv.sh run
PRESET="${PRESET:-synthscapes_light}"
WORKDIR="${WORKDIR:-runs/quickstart}"
.venv/bin/spade-tf train --config "$PRESET" --workdir "$WORKDIR" --max-minutes "${MINUTES:-10}"
latest=$(ls "$WORKDIR"/samples/*.png | sort | tail -n 1)

EXPORT="${EXPORT:-export/models}"
.venv/bin/spade-tf export --checkpoint "$WORKDIR" --out "$EXPORT"
version=$(ls "$EXPORT/spade" | grep -E '^[0-9]+$' | sort -n | tail -n 1)
# Held-out label maps: the synthscapes val split (its seeds never appear in training).
[ -d "$WORKDIR/heldout/val_label" ] || .venv/bin/spade-tf synthscapes --out "$WORKDIR/heldout" --train 0 --val 8 --size 64
.venv/bin/spade-tf synthesize --model "$EXPORT/spade/$version" --labels "$WORKDIR/heldout/val_label" \
  --instance "$WORKDIR/heldout/val_inst" --out "$WORKDIR/synthesized/savedmodel" --quiet
.venv/bin/spade-tf synthesize --model "$EXPORT/spade/$version-tflite/spade_fp16.tflite" \
  --labels "$WORKDIR/heldout/val_label" --instance "$WORKDIR/heldout/val_inst" \
  --out "$WORKDIR/synthesized/tflite_fp16" --quiet
# Evaluation: the built-in segmenter (trained once, about 3 minutes, reused afterwards) scores the
# validation split; KID/FID use its pooled features (no Inception weights here).
SEGMENTER="${SEGMENTER:-runs/segmenter_quickstart}"
[ -f "$SEGMENTER/segmenter.json" ] || .venv/bin/spade-tf train-segmenter --config quickstart --out "$SEGMENTER" --steps 800
.venv/bin/spade-tf evaluate --checkpoint "$WORKDIR" --segmenter "$SEGMENTER" --out "$WORKDIR/eval" --quiet
echo
echo "samples (colourised label | generated | real): $latest"
echo "checkpoints: $WORKDIR/checkpoints   TensorBoard: .venv/bin/tensorboard --logdir $WORKDIR/tensorboard"
echo "export: $EXPORT/spade/$version (SavedModel), $EXPORT/spade/$version-tflite/ (TFLite), report $EXPORT/spade/$version-export.json"
echo "held-out sheets: $WORKDIR/synthesized/savedmodel/sheet.png, $WORKDIR/synthesized/tflite_fp16/sheet.png"
echo "evaluation: $WORKDIR/eval/report.html, $WORKDIR/eval/metrics.json"
echo "paint label maps and watch this model draw them (then open http://127.0.0.1:8000/):"
echo "  .venv/bin/spade-tf studio --model $EXPORT/spade/$version"
echo "  (.venv/bin/spade-tf studio with no --model: the model shipped in the package)"
.venv/bin/python - "$WORKDIR" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
m = json.loads((run / "eval" / "metrics.json").read_text())
g, c = m["segmentation"]["generated"], m["segmentation"]["real_ceiling"]
steps = (run / "steps.log").read_text().split()[-1]
print(f"\nheld-out mIoU {g['miou']:.4f} (real images: {c['miou']:.4f}), KID {m['kid']['mean']:.3f}; "
      f"{m['images']} held-out maps, {steps} training steps, {m['weights']}")
PY

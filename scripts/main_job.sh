#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, train on the built-in synthscapes data for
# about 10 minutes (MINUTES=... to change), and leave samples and a checkpoint in the run folder.
# Re-running continues the same run from its latest checkpoint.
#   bash scripts/main_job.sh            # runs/quickstart
#   WORKDIR=runs/other MINUTES=30 bash scripts/main_job.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_venv.sh run
WORKDIR="${WORKDIR:-runs/quickstart}"
.venv/bin/spade-tf train --config quickstart --workdir "$WORKDIR" --max-minutes "${MINUTES:-10}"
latest=$(ls "$WORKDIR"/samples/*.png | sort | tail -n 1)
echo
echo "samples (colourised label | generated | real): $latest"
echo "checkpoints: $WORKDIR/checkpoints   TensorBoard: .venv/bin/tensorboard --logdir $WORKDIR/tensorboard"

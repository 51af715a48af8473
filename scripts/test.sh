#!/usr/bin/env bash
# Sets up .venv (created or reused) and runs the whole test suite in 2 pytest-xdist processes
# (SPADE_TF_TEST_WORKERS=1 for one; most of the time is single-threaded tracing, so two
# processes on 2 cores are faster: about 19 minutes here, 395 tests).
# Arguments go to pytest, e.g. the fast edit-test loop:  bash scripts/test.sh -m "not slow"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_venv.sh" test
cd "$ROOT"
WORKERS="${SPADE_TF_TEST_WORKERS:-2}"
if [ "$WORKERS" -gt 1 ]; then
  exec "$ROOT/.venv/bin/python" -m pytest -n "$WORKERS" --dist loadgroup "$@"
fi
exec "$ROOT/.venv/bin/python" -m pytest "$@"

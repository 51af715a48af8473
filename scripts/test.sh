#!/usr/bin/env bash
# Sets up .venv (created or reused) and runs the whole test suite.
# Arguments go to pytest, e.g. the fast edit-test loop:  bash scripts/test.sh -m "not slow"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_venv.sh" test
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"

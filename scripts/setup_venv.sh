#!/usr/bin/env bash
# Creates (or reuses) the virtualenv .venv/ at the repository root and installs spade-tf into it.
#
#   bash scripts/setup_venv.sh [run|test]
#
# run:  spade-tf with TensorFlow (CPU build by default).
# test: the same plus pytest and PyTorch (to test reading official .pth checkpoints).
#
# Environment:
#   PYTHON              interpreter for a new venv (default python3; 3.10 or newer)
#   SPADE_TF_TF_EXTRA   cpu (default: tensorflow-cpu) or gpu (tensorflow[and-cuda])
#   SPADE_TF_TORCH      torch requirement for the test profile (default torch==2.13.0, the CPU
#                       wheel of the test machines); set it empty to skip torch (its test skips)
# Re-running is cheap: nothing is installed again unless setup.cfg, pyproject.toml or the
# profile changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE="${1:-run}"
VENV="$ROOT/.venv"
TF_EXTRA="${SPADE_TF_TF_EXTRA:-cpu}"
TORCH="${SPADE_TF_TORCH-torch==2.13.0}"

case "$PROFILE" in
  run) EXTRAS="$TF_EXTRA"; MORE=() ;;
  test) EXTRAS="$TF_EXTRA,test"; MORE=(); [ -n "$TORCH" ] && EXTRAS="$EXTRAS,torch" && MORE=("$TORCH") ;;
  *) echo "usage: $0 [run|test]" >&2; exit 2 ;;
esac

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
STAMP="$VENV/.spade-tf-install"
WANT="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16) $EXTRAS ${MORE[*]:-}"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "setup: installing spade-tf[$EXTRAS] ${MORE[*]:-} (a minute or two the first time)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -e "$ROOT[$EXTRAS]" "${MORE[@]}"
  # The TF Serving protos (warm-up records, gRPC requests). Without --no-deps this package pulls
  # the full 572 MB tensorflow wheel over tensorflow-cpu; its real needs (protobuf, grpcio)
  # come with TensorFlow.
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps "tensorflow-serving-api==2.21.0"
  echo "$WANT" > "$STAMP"
fi

# The studio's page tests drive a real headless Chromium: Debian's chromium and chromium-driver
# (selenium itself comes with the test extra). Installed once, as root or with password-less
# sudo; elsewhere those tests skip and say why. SPADE_TF_NO_BROWSER=1 skips this step.
if [ "$PROFILE" = test ] && [ -z "${SPADE_TF_NO_BROWSER:-}" ] && ! command -v chromedriver >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && SUDO="sudo -n"
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
    echo "setup: installing chromium and chromium-driver (apt-get) for the studio's browser tests"
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
           chromium chromium-driver >/dev/null; }; then
      echo "setup: warning: apt-get could not install chromium; the studio's browser tests will skip" >&2
    fi
  else
    echo "setup: no chromium-driver here and no root to apt-get it: the studio's browser tests" \
         "will skip (install chromium and chromium-driver, or set SPADE_TF_CHROMIUM and" \
         "SPADE_TF_CHROMEDRIVER)" >&2
  fi
fi

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

# LiteRT.js, the runtime the studio's "run here" and `spade-tf export --web` pages run .tflite
# files with in the browser: npm's @litertjs/core and @litertjs/wasm-utils at a pinned version,
# unpacked into the package's static folder (git-ignored; nothing is fetched at run time).
# Without npm the studio keeps its server path, and the browser-runtime tests skip and say why.
# SPADE_TF_NO_LITERTJS=1 skips this step.
LITERTJS_VERSION=2.5.3
VENDOR="$ROOT/spade_tf/studio/static/vendor/litertjs"
if [ -z "${SPADE_TF_NO_LITERTJS:-}" ] && [ "$(cat "$VENDOR/VERSION" 2>/dev/null)" != "$LITERTJS_VERSION" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "setup: fetching LiteRT.js $LITERTJS_VERSION (npm) for the browser runtime"
    TMP_NPM="$(mktemp -d)"
    trap 'rm -rf "$TMP_NPM"' EXIT
    if (cd "$TMP_NPM" && npm pack --silent "@litertjs/core@$LITERTJS_VERSION" \
          "@litertjs/wasm-utils@$LITERTJS_VERSION" >/dev/null 2>&1); then
      mkdir -p "$TMP_NPM/core" "$TMP_NPM/utils"
      tar xzf "$TMP_NPM/litertjs-core-$LITERTJS_VERSION.tgz" -C "$TMP_NPM/core"
      tar xzf "$TMP_NPM/litertjs-wasm-utils-$LITERTJS_VERSION.tgz" -C "$TMP_NPM/utils"
      NEW="$VENDOR.new"
      rm -rf "$NEW" && mkdir -p "$NEW/core" "$NEW/wasm-utils" "$NEW/wasm"
      cp "$TMP_NPM/core/package/dist/index.js" "$NEW/core/index.js"
      cp "$TMP_NPM/utils/package/dist/index.js" "$NEW/wasm-utils/index.js"
      # the relaxed-SIMD builds (one thread; threads; JSPI, which runs partly delegated models)
      # and the compat build for browsers without relaxed SIMD
      cp "$TMP_NPM/core/package/wasm/"litert_wasm_{internal,threaded_internal,jspi_internal,compat_internal}.{js,wasm} "$NEW/wasm/"
      cp "$TMP_NPM/core/package/package.json" "$NEW/core-package.json"
      # the npm packages ship no licence file; their package.json says Apache-2.0, whose text
      # comes from an installed Apache-2.0 package (tensorflow-datasets carries it)
      LICENSE_SRC="$(grep -l "Apache License" "$VENV"/lib/python3*/site-packages/*.dist-info/LICENSE* \
                     "$VENV"/lib/python3*/site-packages/*.dist-info/licenses/LICENSE* 2>/dev/null | head -1 || true)"
      { echo "LiteRT.js: @litertjs/core and @litertjs/wasm-utils $LITERTJS_VERSION (npm), Copyright"
        echo "2025 Google LLC, under the Apache License 2.0 (their package.json):"
        echo; [ -n "$LICENSE_SRC" ] && cat "$LICENSE_SRC"; } > "$NEW/LICENSE"
      echo "$LITERTJS_VERSION" > "$NEW/VERSION"
      rm -rf "$VENDOR" && mv "$NEW" "$VENDOR"
    else
      echo "setup: warning: npm could not fetch @litertjs/core@$LITERTJS_VERSION; the studio's" \
           "'run here' and the export --web page are unavailable" >&2
    fi
  else
    echo "setup: no npm here: the studio's 'run here' and spade-tf export --web need LiteRT.js" \
         "(install npm and rerun this script)" >&2
  fi
fi

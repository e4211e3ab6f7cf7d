#!/usr/bin/env bash
# Set up everything napari-hubmap needs on a fresh Debian-like machine, idempotently:
# the Xvfb/Mesa/Qt system libraries (for napari without a screen), libturbojpeg0 (the tests' DICOM writer) and
# .venv with the package and its test extra (pytest, and the linters ruff and import-linter that scripts/test.sh
# runs first).
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES="xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4
 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-shape0 libdbus-1-3
 libfontconfig1 libturbojpeg0"  # libturbojpeg0: wsidicomizer (the tests' DICOM writer) loads it

missing_system_packages() {
  command -v dpkg-query >/dev/null || return 0
  for p in $SYSTEM_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"
  done
}

missing=$(missing_system_packages | tr '\n' ' ')
if [ -n "${missing// }" ]; then
  echo "setup: installing system packages: $missing" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)" >&2
  $PYTHON -m venv .venv
fi

stamp=".venv/.napari-hubmap-installed"
want=$(cat pyproject.toml | sha1sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing napari-hubmap and its dependencies into .venv (about 2 minutes the first time)" >&2
  if ! .venv/bin/python -m pip install -q -e ".[test]" > .venv/pip.log 2>&1; then
    grep -v "is ignored" .venv/pip.log >&2
    echo "setup: pip install failed (log: .venv/pip.log)" >&2
    exit 1
  fi
  .venv/bin/python -c "import napari_hubmap, napari, torch, segmentation_models_pytorch" 
  .venv/bin/ruff --version >/dev/null && .venv/bin/lint-imports --help >/dev/null  # scripts/test.sh runs them
  echo "$want" > "$stamp"
fi

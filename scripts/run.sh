#!/usr/bin/env bash
# Set up (scripts/setup.sh) and open napari with the sample slide and the plugin's widgets docked.
# Extra arguments are slide paths to open instead of the sample. Without a screen (no $DISPLAY),
# napari runs on a virtual screen, saves a screenshot to napari-hubmap.png and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -n "${DISPLAY:-}" ]; then
  exec .venv/bin/napari-hubmap view --predict "$@"
fi
echo "run: no screen found; running napari on Xvfb and saving a screenshot to napari-hubmap.png" >&2
xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/napari-hubmap view --predict --screenshot napari-hubmap.png "$@"
echo "run: screenshot saved to $(pwd)/napari-hubmap.png" >&2

#!/usr/bin/env bash
# Set up (scripts/setup.sh), check ruff and the import contracts, and run the whole test suite headless on a
# virtual screen (Xvfb + Mesa).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONUNBUFFERED=1
# The rules checked before the code runs (configured in pyproject.toml): lint, then the import contracts
# (the core never imports Qt/napari/the widgets, no import cycles). Either failing stops here.
.venv/bin/ruff check .
.venv/bin/lint-imports
if [ -n "${DISPLAY:-}" ]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest "$@"

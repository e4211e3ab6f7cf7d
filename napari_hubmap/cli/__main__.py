"""``python -m napari_hubmap.cli``: the ``napari-hubmap`` command (the trainer's torchrun processes, benchmarks and
tests run it so)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())

"""What every command group shares: the one-line argparse parser and the ``--mpp`` option."""

from __future__ import annotations

import argparse

from ..defaults import DEFAULT_MPP
from ..errors import HubmapInputError

EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (and exit code 2)."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"napari-hubmap: error: {message} (see {self.prog} --help)\n")


def mpp_argument(text: str) -> float:
    """argparse type of ``--mpp``: µm per pixel, a number > 0 (else one error line, exit 2)."""
    from ..slide.scale import check_mpp

    try:
        return check_mpp(text)
    except HubmapInputError as error:
        raise argparse.ArgumentTypeError(error.problem) from None


def add_mpp_option(parser, what: str = "the slides", default: str = "the file's") -> None:
    parser.add_argument("--mpp", type=mpp_argument, default=None, metavar="MPP",
                        help=f"µm per pixel of {what}, for files that carry none; it wins over a file's own (with a "
                             f"warning). Default: {default}, else {DEFAULT_MPP:g} assumed (and said so)")

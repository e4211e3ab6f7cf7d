"""``napari-hubmap`` command line: every GUI action as a batch command.

Bad input prints one line ``napari-hubmap: error: <file>: <problem>`` on stderr and exits with 2.
Commands that depend on a slide's scale print ``mpp``, ``mpp_source`` and ``mpp_file`` in their JSON
line (:mod:`napari_hubmap.slide.scale`); ``--mpp`` gives the µm/px of files that carry none.

One module per command group, each holding its parsers beside the functions they run (``add_parsers(sub)``
adds the group's commands); this one builds the top-level parser from them and keeps the one error rule.
"""

import argparse
import sys
import warnings

from ..errors import HubmapInputError
from . import annotations, batch, models, postprocess, predict, project, slides, train, view
from .common import EXIT_BAD_INPUT, EXIT_CANCELLED, OneLineParser

GROUPS = (view, slides, predict, batch, models, annotations, postprocess, project, train)
"""The command groups, in the order their commands appear in ``napari-hubmap --help``."""

__all__ = ["EXIT_BAD_INPUT", "EXIT_CANCELLED", "build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="napari-hubmap", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = lambda message, category, *a, **k: f"napari-hubmap: warning: {message}\n"
    return run(args)


def run(args) -> int:
    """Run the command ``args`` names: bad input or a failed read or write is one error line and exit 2, a
    cancelled run exit 130."""
    try:
        return args.func(args)
    except HubmapInputError as exc:
        print(f"napari-hubmap: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InterruptedError as exc:
        print(f"napari-hubmap: cancelled: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    except OSError as exc:  # a read or write the system refused that no writer named: still one line
        print(f"napari-hubmap: error: {_os_error_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("napari-hubmap: cancelled", file=sys.stderr)
        return EXIT_CANCELLED


def _os_error_line(exc: OSError) -> str:
    """``<file>: <problem>`` of an OSError (the problem alone when it names no file)."""
    problem = exc.strerror or str(exc)
    return f"{exc.filename}: {problem}" if exc.filename is not None else problem

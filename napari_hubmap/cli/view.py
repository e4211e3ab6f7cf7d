"""``napari-hubmap view``: napari with slides (or a sample) and the widgets docked."""

from __future__ import annotations

from ..defaults import DEFAULT_MODEL, DEFAULT_SAMPLE
from .common import add_mpp_option


def add_parsers(sub) -> None:
    view = sub.add_parser("view", help="open napari with slides (default: the sample slide) and the widgets docked")
    view.add_argument("slides", nargs="*", metavar="SLIDE")
    view.add_argument("--sample", default=DEFAULT_SAMPLE, choices=["hubmap-pas", "synthetic-pas", "synthetic-he"])
    view.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window after start-up and quit")
    view.add_argument("--predict", nargs="?", const=DEFAULT_MODEL, default="", metavar="MODEL",
                      help=f"run this model on the slide at start-up (default {DEFAULT_MODEL}, shipped in models/)")
    add_mpp_option(view)
    view.set_defaults(func=cmd_view)


def cmd_view(args) -> int:
    from .._widgets.launch import run_viewer

    run_viewer(args.slides, sample=None if args.slides else args.sample, screenshot=args.screenshot,
               predict=args.predict or None, mpp=args.mpp)
    return 0

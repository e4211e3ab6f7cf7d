"""``napari-hubmap`` command line: every GUI action as a batch command.

Bad input prints one line ``napari-hubmap: error: <file>: <problem>`` on stderr and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .errors import HubmapInputError

EXIT_BAD_INPUT = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (and exit code 2)."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"napari-hubmap: error: {message} (see {self.prog} --help)\n")


def _progress_bar(description: str):
    """A tqdm bar on stderr driven by (done, total) callbacks."""
    from tqdm import tqdm

    bar = tqdm(total=1, desc=description, unit="", file=sys.stderr, leave=False, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update


def cmd_info(args) -> int:
    from .slide import open_slide

    for path in args.slides:
        with open_slide(path) as slide:
            print(json.dumps(slide.info()))
    return 0


def cmd_pyramid(args) -> int:
    from .slide import open_slide

    for path in args.slides:
        with open_slide(path) as slide:
            bar, update = _progress_bar(f"pyramid {Path(path).name}")
            with bar:
                slide.build_cache(progress=update)
            where = str(slide.cache.final) if slide.cache else None
            print(json.dumps({"path": path, "cache": where}))
    return 0


def synth_geojson_path(slide_path: str) -> Path:
    """``x.tif`` / ``x.ome.tif`` -> ``x.geojson`` beside it."""
    path = Path(slide_path)
    stem = path.name[: -len(".ome.tif")] if path.name.lower().endswith(".ome.tif") else path.stem
    return path.with_name(stem + ".geojson")


def cmd_synth(args) -> int:
    from shapely.geometry import Polygon

    from .annotations import Annotation, annotations_to_feature_collection, write_geojson
    from .synth import SynthSpec, write_synthetic_tiff

    if args.width <= 0 or args.height <= 0:
        raise HubmapInputError(args.out, f"width and height must be positive (got {args.width}x{args.height})")
    spec = SynthSpec(width=args.width, height=args.height, seed=args.seed, stain=args.stain, mpp=args.mpp)
    bar, update = _progress_bar(f"synth {Path(args.out).name}")
    with bar:
        glomeruli = write_synthetic_tiff(args.out, spec, tile=args.tile, pyramid=args.pyramid, compression=args.compression, progress=update)
    geojson = synth_geojson_path(args.out)
    annotations = [Annotation(Polygon(g.polygon), "Glomerulus", {}) for g in glomeruli]
    write_geojson(geojson, annotations_to_feature_collection(annotations))
    print(json.dumps({"path": args.out, "geojson": str(geojson), "width": spec.width, "height": spec.height, "glomeruli": len(glomeruli)}))
    return 0


def cmd_convert_annotations(args) -> int:
    from .annotations import convert_annotations, parse_shape

    shape = parse_shape(args.shape) if args.shape else None
    out = convert_annotations(args.input, args.to, args.out, shape=shape, downsample=args.downsample, rle_id=args.id)
    print(json.dumps({"input": args.input, "to": args.to, "out": str(out)}))
    return 0


def cmd_view(args) -> int:
    from ._widgets.launch import run_viewer

    run_viewer(args.slides, sample=None if args.slides else args.sample, screenshot=args.screenshot)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="napari-hubmap", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    view = sub.add_parser("view", help="open napari with slides (default: the sample slide) and the widgets docked")
    view.add_argument("slides", nargs="*", metavar="SLIDE")
    view.add_argument("--sample", default="synthetic-pas", choices=["synthetic-pas", "synthetic-he"])
    view.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window after start-up and quit")
    view.set_defaults(func=cmd_view)

    info = sub.add_parser("info", help="print a slide's size, levels, mpp and layout as one JSON line")
    info.add_argument("slides", nargs="+", metavar="SLIDE")
    info.set_defaults(func=cmd_info)

    pyramid = sub.add_parser("pyramid", help="build the pyramid cache of single-level slides")
    pyramid.add_argument("slides", nargs="+", metavar="SLIDE")
    pyramid.set_defaults(func=cmd_pyramid)

    synth = sub.add_parser("synth", help="write a synthetic kidney slide (tiled TIFF) and its glomeruli (GeoJSON)")
    synth.add_argument("out", metavar="OUT.tif")
    synth.add_argument("--width", type=int, default=8192)
    synth.add_argument("--height", type=int, default=6144)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--stain", choices=["pas", "he"], default="pas")
    synth.add_argument("--mpp", type=float, default=0.5)
    synth.add_argument("--tile", type=int, default=512)
    synth.add_argument("--pyramid", action="store_true", help="also write reduced levels (SubIFDs)")
    synth.add_argument("--compression", default=None, help="e.g. zlib, jpeg, lzw (default: none, like Kaggle slides)")
    synth.set_defaults(func=cmd_synth)

    convert = sub.add_parser("convert-annotations", help="convert between GeoJSON polygons, RLE CSV and masks")
    convert.add_argument("input", metavar="IN")
    convert.add_argument("--to", required=True, choices=["rle", "geojson", "mask"])
    convert.add_argument("--shape", help="full-resolution HxW (needed for polygons and RLE input)")
    convert.add_argument("--out", required=True)
    convert.add_argument("--downsample", type=float, default=1.0, help="write the mask at this pyramid factor")
    convert.add_argument("--id", help="row of an RLE CSV to convert (default: the only row)")
    convert.set_defaults(func=cmd_convert_annotations)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = lambda message, category, *a, **k: f"napari-hubmap: warning: {message}\n"
    try:
        return args.func(args)
    except HubmapInputError as exc:
        print(f"napari-hubmap: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InterruptedError as exc:
        print(f"napari-hubmap: cancelled: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("napari-hubmap: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Slide commands: ``info`` (size, levels, scale), ``pyramid`` (the cache of single-level slides) and ``synth``
(a synthetic slide with its glomeruli)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import HubmapInputError
from ..stores.naming import slide_stem
from .common import add_mpp_option
from .progress_bar import ProgressBar


def add_parsers(sub) -> None:
    info = sub.add_parser("info", help="print a slide's size, levels, mpp and layout as one JSON line")
    info.add_argument("slides", nargs="+", metavar="SLIDE")
    add_mpp_option(info)
    info.set_defaults(func=cmd_info)

    pyramid = sub.add_parser("pyramid", help="build the pyramid cache of single-level slides")
    pyramid.add_argument("slides", nargs="+", metavar="SLIDE")
    pyramid.set_defaults(func=cmd_pyramid)
    _add_synth_parser(sub)


def _add_synth_parser(sub) -> None:
    from ..synth.spec import STAINS, SynthSpec

    synth = sub.add_parser("synth", help="write a synthetic kidney slide (tiled TIFF) and its glomeruli (GeoJSON)")
    synth.add_argument("out", metavar="OUT.tif")
    synth.add_argument("--width", type=int, default=8192)
    synth.add_argument("--height", type=int, default=6144)
    synth.add_argument("--seed", type=int, default=SynthSpec.seed)
    synth.add_argument("--stain", choices=STAINS, default=SynthSpec.stain)
    synth.add_argument("--mpp", type=float, default=SynthSpec.mpp)
    synth.add_argument("--tile", type=int, default=512)
    synth.add_argument("--pyramid", action="store_true", help="also write reduced levels (SubIFDs)")
    synth.add_argument("--compression", default=None, help="e.g. zlib, jpeg, lzw (default: none, like Kaggle slides)")
    synth.set_defaults(func=cmd_synth)


def cmd_info(args) -> int:
    from ..slide import open_slide

    for path in args.slides:
        with open_slide(path, mpp=args.mpp) as slide:
            print(json.dumps(slide.info()))
    return 0


def cmd_pyramid(args) -> int:
    from ..slide import open_slide

    for path in args.slides:
        with open_slide(path) as slide:
            with ProgressBar(f"pyramid {Path(path).name}") as bar:
                slide.build_cache(progress=bar.update)
            where = str(slide.cache.final) if slide.cache else None
            print(json.dumps({"path": path, "cache": where}))
    return 0


def synth_geojson_path(slide_path: str) -> Path:
    """``x.tif`` / ``x.ome.tif`` -> ``x.geojson`` beside it."""
    path = Path(slide_path)
    return path.with_name(slide_stem(path) + ".geojson")


def cmd_synth(args) -> int:
    from shapely.geometry import Polygon

    from ..annotations import Annotation, annotations_to_feature_collection, write_geojson
    from ..synth import SynthSpec, write_synthetic_tiff

    if args.width <= 0 or args.height <= 0:
        raise HubmapInputError(args.out, f"width and height must be positive (got {args.width}x{args.height})")
    spec = SynthSpec(width=args.width, height=args.height, seed=args.seed, stain=args.stain, mpp=args.mpp)
    with ProgressBar(f"synth {Path(args.out).name}", unit="tiles") as bar:
        glomeruli = write_synthetic_tiff(args.out, spec, tile=args.tile, pyramid=args.pyramid, compression=args.compression,
                                         progress=bar.update)
    geojson = synth_geojson_path(args.out)
    annotations = [Annotation(Polygon(g.polygon), "Glomerulus", {}) for g in glomeruli]
    write_geojson(geojson, annotations_to_feature_collection(annotations))
    print(json.dumps({"path": args.out, "geojson": str(geojson), "width": spec.width, "height": spec.height, "glomeruli": len(glomeruli)}))
    return 0

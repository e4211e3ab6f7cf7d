"""``napari-hubmap convert-annotations``: between GeoJSON/LabelMe polygons, RLE CSV and masks."""

from __future__ import annotations

import json


def add_parsers(sub) -> None:
    convert = sub.add_parser("convert-annotations", help="convert between GeoJSON/LabelMe polygons, RLE CSV and masks")
    convert.add_argument("input", metavar="IN")
    convert.add_argument("--to", required=True, choices=["rle", "geojson", "mask"])
    convert.add_argument("--shape", help="full-resolution HxW (needed for polygons and RLE input)")
    convert.add_argument("--out", required=True)
    convert.add_argument("--downsample", type=float, default=1.0, help="write the mask at this pyramid factor")
    convert.add_argument("--id", help="row of an RLE CSV to convert (default: the only row)")
    convert.add_argument("--label", action="append", metavar="NAME",
                         help="keep only polygons of this class (GeoJSON classification, LabelMe label); repeatable")
    convert.set_defaults(func=cmd_convert_annotations)


def cmd_convert_annotations(args) -> int:
    from ..annotations import convert_annotations, parse_shape

    shape = parse_shape(args.shape) if args.shape else None
    out = convert_annotations(args.input, args.to, args.out, shape=shape, downsample=args.downsample, rle_id=args.id,
                              labels=args.label)
    print(json.dumps({"input": args.input, "to": args.to, "out": str(out)}))
    return 0

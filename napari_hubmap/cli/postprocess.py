"""Post-processing commands: ``postprocess`` (probability map -> instances), ``save-threshold`` (a map's models'
default), ``evaluate`` (against ground truth) and ``export`` (labels to other formats)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import HubmapInputError
from ..stores.naming import PROBABILITY_SUFFIX
from .common import add_mpp_option
from .progress_bar import ProgressBar


def add_parsers(sub) -> None:
    _add_postprocess_parser(sub)
    save = sub.add_parser("save-threshold", help="make THRESHOLD the default of the models that made a probability "
                                                  "map: its one model's card, or an ensemble.json beside the map")
    save.add_argument("prob", metavar="PROB.zarr")
    save.add_argument("threshold", type=float, metavar="THRESHOLD", help="probability cutoff in [0, 1] (e.g. "
                                                                         "evaluate --curve's best_threshold)")
    save.set_defaults(func=cmd_save_threshold)
    _add_evaluate_parser(sub)
    _add_export_parser(sub)


def _add_postprocess_parser(sub) -> None:
    from ..postprocess.config import BLOCK

    post = sub.add_parser("postprocess", help="probability map -> glomerulus instances (labels OME-Zarr), block by block")
    post.add_argument("prob", metavar="PROB.zarr")
    add_object_options(post)
    post.add_argument("--block", type=int, default=BLOCK, help="block size in pixels")
    post.add_argument("--level", type=int, default=0, help="pyramid level of the probability map")
    post.add_argument("--out", required=True, metavar="LABELS.zarr")
    post.add_argument("--shape", help="full-resolution HxW of the slide, for a map that does not record it (another tool's)")
    add_mpp_option(post, "the slide of a map another tool wrote", "the map's own scale")
    post.set_defaults(func=cmd_postprocess)


def _add_evaluate_parser(sub) -> None:
    evaluate = sub.add_parser("evaluate", help="pixel Dice/IoU and object F1 of a prediction against ground truth (one JSON line)")
    evaluate.add_argument("pred", metavar="PRED", help=f"a {PROBABILITY_SUFFIX}, a labels .zarr, or a label/mask PNG/TIFF")
    evaluate.add_argument("--gt", required=True, help="GeoJSON, RLE CSV, mask PNG/TIFF or labels .zarr")
    evaluate.add_argument("--threshold", type=float, default=None, help="for a probability map (default: the card threshold, else 0.5)")
    evaluate.add_argument("--iou", type=float, default=0.5, help="IoU for an object match")
    evaluate.add_argument("--curve", action="store_true", help="add Dice for thresholds 0.05..0.95 (probability maps)")
    evaluate.add_argument("--shape", help="full-resolution HxW of the slide when PRED does not record it")
    evaluate.add_argument("--id", help="row of an RLE CSV ground truth")
    add_mpp_option(evaluate, "the predicted slide", "what the prediction records")
    evaluate.set_defaults(func=cmd_evaluate)


def _add_export_parser(sub) -> None:
    export = sub.add_parser("export", help="labels -> Kaggle RLE CSV, QuPath GeoJSON, OME-Zarr labels or TIFF")
    export.add_argument("labels", metavar="LABELS", help="a labels .zarr (from postprocess) or a label/mask PNG/TIFF")
    export.add_argument("--format", required=True, choices=["rle-csv", "geojson", "ome-zarr", "tiff"])
    export.add_argument("--out", required=True, metavar="OUT")
    export.add_argument("--id", help="RLE row id (default: the slide's file stem)")
    export.add_argument("--shape", help="full-resolution HxW of the slide when LABELS does not record it")
    export.add_argument("--downsample", type=float, default=None, help="downscale of LABELS when it does not record it")
    export.set_defaults(func=cmd_export)


def add_object_options(parser) -> None:
    """The options that turn a probability map into objects (``postprocess`` and ``batch``)."""
    from ..postprocess.config import MARKERS, PostprocessConfig

    d = PostprocessConfig()
    parser.add_argument("--threshold", type=float, default=None,
                        help=f"probability cutoff, >= (default: the models' card threshold, else {d.threshold:g})")
    parser.add_argument("--min-size", type=int, default=None,
                        help="remove objects under N pixels at the labels' scale (default: the models' card "
                             "min_object_um2 at the map's recorded µm/px, else 0)")
    parser.add_argument("--no-fill-holes", action="store_true", help="keep holes inside objects")
    parser.add_argument("--watershed", action="store_true", help="split touching glomeruli")
    parser.add_argument("--markers", choices=MARKERS, default=d.markers)
    parser.add_argument("--min-distance", type=int, default=d.min_distance, help="pixels between watershed seeds (markers=distance)")
    parser.add_argument("--h", type=float, default=d.h, help="h of the h-maxima seeds (markers=h-maxima)")
    parser.add_argument("--compactness", type=float, default=d.compactness)
    parser.add_argument("--grow", type=int, default=d.grow, metavar="PX",
                        help="grow each object's outline by PX pixels at the labels' scale into the background "
                             "(nearer to it than to anything else above the threshold); for annotations that take "
                             "in Bowman's capsule where the model finds the tuft")
    parser.add_argument("--outline-threshold", type=float, default=None, metavar="P",
                        help="each object found at the threshold takes in the pixels connected to it down to "
                             "probability P (hysteresis: the threshold decides which glomeruli there are, P where their "
                             "edge lies; default: the models' card outline_threshold, else none; 1: none)")


def object_options(args) -> dict:
    """:class:`~napari_hubmap.postprocess.PostprocessConfig` fields from :func:`add_object_options`' options;
    ``threshold``, ``min_size`` and ``outline_threshold`` only when given (else the models' card decides)."""
    chosen = {"fill_holes": not args.no_fill_holes, "watershed": args.watershed, "markers": args.markers,
              "min_distance": args.min_distance, "h": args.h, "compactness": args.compactness}
    if args.grow:  # only when asked for: a cohort's settings key stays what it was before --grow existed
        chosen["grow"] = args.grow
    given = (("threshold", args.threshold), ("min_size", args.min_size), ("outline_threshold", args.outline_threshold))
    return chosen | {k: v for k, v in given if v is not None}


def cmd_postprocess(args) -> int:
    from ..annotations import parse_shape
    from ..postprocess import PostprocessConfig, postprocess_slide
    from ..postprocess.slide import recorded_defaults
    from ..stores.probability import open_probability

    shape = parse_shape(args.shape) if args.shape else None
    chosen = object_options(args)
    if not {"threshold", "min_size", "outline_threshold"} <= chosen.keys():
        meta = open_probability(args.prob, shape=shape, mpp=args.mpp)[1]
        chosen = {**recorded_defaults(meta, args.level), **chosen}
    config = PostprocessConfig(**chosen)
    with ProgressBar(f"postprocess {Path(args.prob).name}") as bar:
        result = postprocess_slide(args.prob, args.out, config, level=args.level, block=args.block, progress=bar.update,
                                   shape=shape, mpp=args.mpp)
    print(json.dumps({"prob": args.prob, **result.as_dict(), "threshold": config.threshold, "min_size": config.min_size,
                      "grow": config.grow, "outline_threshold": config.outline_threshold}))
    return 0


def cmd_save_threshold(args) -> int:
    from ..postprocess import save_best_threshold

    saved = save_best_threshold(args.prob, args.threshold)
    print(json.dumps({"prob": args.prob, "threshold": args.threshold, "saved": str(saved)}))
    return 0


def cmd_evaluate(args) -> int:
    import numpy as np

    from ..annotations import parse_shape
    from ..metrics import evaluate
    from ..postprocess import threshold_curve
    from ..postprocess.inputs import load_ground_truth, load_prediction
    from ..slide.scale import recorded_scale

    pred = load_prediction(args.pred, parse_shape(args.shape) if args.shape else None, args.mpp)
    gt = load_ground_truth(args.gt, pred, rle_id=args.id)
    if args.curve and pred.kind != "probability":
        raise HubmapInputError(args.pred, f"--curve needs a probability map (<slide>{PROBABILITY_SUFFIX})")
    threshold = pred.default_threshold() if args.threshold is None else args.threshold
    scores = evaluate(np.asarray(pred.array), gt, kind=pred.kind, threshold=threshold, iou=args.iou)
    line = {"pred": args.pred, "gt": args.gt, "kind": pred.kind, "downscale": pred.downscale,
            **recorded_scale(pred.meta, args.mpp).as_dict(), **scores}
    if args.curve:
        line["curve"] = threshold_curve(pred.array, gt).as_dict()
    print(json.dumps(line))
    return 0


def cmd_export(args) -> int:
    from ..annotations import parse_shape
    from ..postprocess.export import export_labels

    shape = parse_shape(args.shape) if args.shape else None
    summary = export_labels(args.labels, args.format, args.out, rle_id=args.id, full_shape=shape, downscale=args.downsample)
    print(json.dumps(summary))
    return 0

"""``napari-hubmap batch``: a whole cohort (predict, post-process, export), here or on a Dask cluster."""

from __future__ import annotations

import json

from .common import EXIT_BAD_INPUT, add_mpp_option
from .progress_bar import ProgressBar


def add_parsers(sub) -> None:
    from ..inference.config import BACKENDS, DEVICES, InferenceConfig
    from ..postprocess.config import MARKERS, PostprocessConfig

    batch = sub.add_parser("batch", help="a cohort: predict, post-process and export every slide (resumable; "
                                         "--workers or --scheduler for a Dask cluster)")
    batch.add_argument("slides", nargs="+", metavar="SLIDE")
    batch.add_argument("--model", action="append", required=True, help="model name or folder; repeat for an ensemble")
    batch.add_argument("--out", required=True, help="folder for every slide's map, labels and exports, and submission.csv")
    batch.add_argument("--export", default="rle-csv,geojson",
                       help="comma-separated: rle-csv (one Kaggle CSV for the cohort), geojson, ome-zarr")
    inference, post = InferenceConfig(), PostprocessConfig()
    batch.add_argument("--tta", default=inference.tta, help="none, flips, d4 or a comma-separated list of transforms")
    batch.add_argument("--device", choices=DEVICES, default=inference.device)
    batch.add_argument("--backend", choices=BACKENDS, default=inference.backend)
    batch.add_argument("--threshold", type=float, default=None, help="probability cutoff (default: the models' card)")
    batch.add_argument("--min-size", type=int, default=None, help="smallest object in labels pixels (default: the card's)")
    batch.add_argument("--watershed", action="store_true", help="split touching glomeruli")
    batch.add_argument("--markers", choices=MARKERS, default=post.markers)
    batch.add_argument("--no-fill-holes", action="store_true", help="keep holes inside objects")
    where = batch.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://host:8786")
    where.add_argument("--workers", type=int, metavar="N", help="start a Dask LocalCluster of N worker processes here")
    add_mpp_option(batch)
    batch.set_defaults(func=cmd_batch)


def cohort_config(args):
    from ..batch import CohortConfig
    from ..inference.config import InferenceConfig

    inference = InferenceConfig(models=args.model, tta=args.tta, device=args.device, backend=args.backend, mpp=args.mpp)
    post = {"watershed": args.watershed, "markers": args.markers, "fill_holes": not args.no_fill_holes}
    if args.threshold is not None:
        post["threshold"] = args.threshold
    if args.min_size is not None:
        post["min_size"] = args.min_size
    exports = tuple(e.strip() for e in args.export.split(",") if e.strip())
    return CohortConfig(inference=inference, postprocess=post, exports=exports)


def cmd_batch(args) -> int:
    from ..batch import run_cohort

    config = cohort_config(args)
    with ProgressBar("batch", unit="slides") as bar:
        lines = run_cohort(args.slides, args.out, config, scheduler=args.scheduler, workers=args.workers,
                           progress=bar.update, on_line=lambda line: print(json.dumps(line), flush=True))
    return 0 if all("error" not in line for line in lines) else EXIT_BAD_INPUT  # each failed slide said why in its line

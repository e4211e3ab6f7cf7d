"""``napari-hubmap batch``: a whole cohort (predict, post-process, export), here or on a Dask cluster."""

from __future__ import annotations

import json

from .common import EXIT_BAD_INPUT, add_mpp_option
from .postprocess import add_object_options, object_options
from .progress_bar import ProgressBar


def add_parsers(sub) -> None:
    from ..inference.config import BACKENDS, DEVICES, InferenceConfig

    batch = sub.add_parser("batch", help="a cohort: predict, post-process and export every slide (resumable; "
                                         "--workers or --scheduler for a Dask cluster)")
    batch.add_argument("slides", nargs="+", metavar="SLIDE")
    batch.add_argument("--model", action="append", required=True, help="model name or folder; repeat for an ensemble")
    batch.add_argument("--out", required=True, help="folder for every slide's map, labels and exports, and submission.csv")
    batch.add_argument("--export", default="rle-csv,geojson",
                       help="comma-separated: rle-csv (one Kaggle CSV for the cohort), geojson, ome-zarr")
    inference = InferenceConfig()
    batch.add_argument("--tta", default=inference.tta, help="none, flips, d4 or a comma-separated list of transforms")
    batch.add_argument("--device", choices=DEVICES, default=inference.device)
    batch.add_argument("--backend", choices=BACKENDS, default=inference.backend)
    add_object_options(batch)
    where = batch.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://host:8786")
    where.add_argument("--workers", type=int, metavar="N", help="start a Dask LocalCluster of N worker processes here")
    add_mpp_option(batch)
    batch.set_defaults(func=cmd_batch)


def cohort_config(args):
    from ..batch import CohortConfig
    from ..inference.config import InferenceConfig
    from ..postprocess.config import PostprocessConfig

    inference = InferenceConfig(models=args.model, tta=args.tta, device=args.device, backend=args.backend, mpp=args.mpp)
    seeds = PostprocessConfig()  # watershed seed settings only when changed: cohorts made before they were
    post = {k: v for k, v in object_options(args).items()  # options keep their keys, so finished slides are still skipped
            if k not in ("min_distance", "h", "compactness") or v != getattr(seeds, k)}
    exports = tuple(e.strip() for e in args.export.split(",") if e.strip())
    return CohortConfig(inference=inference, postprocess=post, exports=exports)


def cmd_batch(args) -> int:
    from ..batch import run_cohort

    config = cohort_config(args)
    with ProgressBar("batch", unit="slides") as bar:
        lines = run_cohort(args.slides, args.out, config, scheduler=args.scheduler, workers=args.workers,
                           progress=bar.update, on_line=lambda line: print(json.dumps(line), flush=True))
    return 0 if all("error" not in line for line in lines) else EXIT_BAD_INPUT  # each failed slide said why in its line

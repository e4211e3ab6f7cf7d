"""``napari-hubmap predict``: tiled ensemble inference, one probability OME-Zarr per slide."""

from __future__ import annotations

import json
from pathlib import Path

from ..stores.naming import PROBABILITY_SUFFIX, probability_path
from .common import add_mpp_option
from .progress_bar import ProgressBar


def add_parsers(sub) -> None:
    from ..inference.config import BACKENDS, BLENDS, DEVICES, InferenceConfig

    predict = sub.add_parser("predict", help="tiled ensemble inference: one probability OME-Zarr per slide")
    predict.add_argument("slides", nargs="+", metavar="SLIDE")
    predict.add_argument("--model", action="append", required=True, help="model name or folder; repeat for an ensemble")
    predict.add_argument("--out", required=True, help=f"folder for <slide stem>{PROBABILITY_SUFFIX}")
    inference = InferenceConfig()
    predict.add_argument("--tta", default=inference.tta, help="none, flips, d4 or a comma-separated list of transforms")
    predict.add_argument("--tile", type=int, default=None, help="tile size at the working scale (default: the card's)")
    predict.add_argument("--overlap", type=int, default=None)
    predict.add_argument("--blend", choices=BLENDS, default=inference.blend)
    predict.add_argument("--device", choices=DEVICES, default=inference.device)
    predict.add_argument("--backend", choices=BACKENDS, default=inference.backend,
                         help="what runs the network: auto (ONNX Runtime on the CPU when installed, else torch), torch, onnx, "
                              "onnx-int8 (the ONNX graph quantised to 8 bits: faster on CPUs with VNNI, a little less exact)")
    predict.add_argument("--batch", type=int, default=inference.batch)
    predict.add_argument("--forward-batch", type=int, default=None,
                         help="tiles per forward call (default: the whole batch on a GPU, 1 on CPU)")
    predict.add_argument("--no-skip-background", action="store_true", help="also run on tiles without tissue")
    add_mpp_option(predict)
    predict.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from ..inference import InferenceConfig, predict_slide

    config = InferenceConfig(
        models=args.model, tta=args.tta, tile=args.tile, overlap=args.overlap, blend=args.blend,
        device=args.device, backend=args.backend, batch=args.batch, skip_background=not args.no_skip_background,
        forward_batch=args.forward_batch, mpp=args.mpp,
    )
    out_dir = Path(args.out)
    for path in args.slides:
        out = probability_path(path, out_dir)
        with ProgressBar(f"predict {Path(path).name}", unit="tiles") as bar:
            result = predict_slide(path, out, config, progress=bar.update)
        print(json.dumps(_result_line(path, out, result)))
    return 0


def _result_line(path, out: Path, result) -> dict:
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "slide": path, "out": str(out), "tiles": result.tiles, "skipped_tiles": result.skipped,
        "computed_tiles": result.computed, "seconds": round(result.seconds, 3),
        "tiles_per_s": round(result.tiles_per_s, 3), "peak_rss_mb": round(peak_mb, 1),
        "resumed_rows": result.resumed_rows, "complete": result.complete, "downscale": result.downscale,
        "backend": result.backend,
        **result.scale.as_dict(),
    }

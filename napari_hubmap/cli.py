"""``napari-hubmap`` command line: every GUI action as a batch command.

Bad input prints one line ``napari-hubmap: error: <file>: <problem>`` on stderr and exits with 2.
Commands that depend on a slide's scale print ``mpp``, ``mpp_source`` and ``mpp_file`` in their JSON
line (:mod:`napari_hubmap.slide.scale`); ``--mpp`` gives the µm/px of files that carry none.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .cli_progress import ProgressBar
from .defaults import DEFAULT_MODEL, DEFAULT_MPP, DEFAULT_SAMPLE
from .errors import HubmapInputError
from .stores.naming import PROBABILITY_SUFFIX, probability_path, slide_stem

EXIT_BAD_INPUT = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (and exit code 2)."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"napari-hubmap: error: {message} (see {self.prog} --help)\n")


def mpp_argument(text: str) -> float:
    """argparse type of ``--mpp``: µm per pixel, a number > 0 (else one error line, exit 2)."""
    from .slide.scale import check_mpp

    try:
        return check_mpp(text)
    except HubmapInputError as error:
        raise argparse.ArgumentTypeError(error.problem) from None


def add_mpp_option(parser, what: str = "the slides", default: str = "the file's") -> None:
    parser.add_argument("--mpp", type=mpp_argument, default=None, metavar="MPP",
                        help=f"µm per pixel of {what}, for files that carry none; it wins over a file's own (with a "
                             f"warning). Default: {default}, else {DEFAULT_MPP:g} assumed (and said so)")


def cmd_info(args) -> int:
    from .slide import open_slide

    for path in args.slides:
        with open_slide(path, mpp=args.mpp) as slide:
            print(json.dumps(slide.info()))
    return 0


def cmd_pyramid(args) -> int:
    from .slide import open_slide

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

    from .annotations import Annotation, annotations_to_feature_collection, write_geojson
    from .synth import SynthSpec, write_synthetic_tiff

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


def cmd_convert_annotations(args) -> int:
    from .annotations import convert_annotations, parse_shape

    shape = parse_shape(args.shape) if args.shape else None
    out = convert_annotations(args.input, args.to, args.out, shape=shape, downsample=args.downsample, rle_id=args.id,
                              labels=args.label)
    print(json.dumps({"input": args.input, "to": args.to, "out": str(out)}))
    return 0


def cmd_view(args) -> int:
    from ._widgets.launch import run_viewer

    run_viewer(args.slides, sample=None if args.slides else args.sample, screenshot=args.screenshot,
               predict=args.predict or None, mpp=args.mpp)
    return 0


def cmd_predict(args) -> int:
    import resource

    from .inference import InferenceConfig, predict_slide

    config = InferenceConfig(
        models=args.model, tta=args.tta, tile=args.tile, overlap=args.overlap, blend=args.blend,
        device=args.device, batch=args.batch, skip_background=not args.no_skip_background,
        forward_batch=args.forward_batch, mpp=args.mpp,
    )
    out_dir = Path(args.out)
    for path in args.slides:
        out = probability_path(path, out_dir)
        with ProgressBar(f"predict {Path(path).name}", unit="tiles") as bar:
            result = predict_slide(path, out, config, progress=bar.update)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({
            "slide": path, "out": str(out), "tiles": result.tiles, "skipped_tiles": result.skipped,
            "computed_tiles": result.computed, "seconds": round(result.seconds, 3),
            "tiles_per_s": round(result.tiles_per_s, 3), "peak_rss_mb": round(peak_mb, 1),
            "resumed_rows": result.resumed_rows, "complete": result.complete, "downscale": result.downscale,
            **result.scale.as_dict(),
        }))
    return 0


def cmd_import_model(args) -> int:
    from .registry import import_checkpoint

    out = import_checkpoint(args.checkpoint, arch=args.arch, encoder=args.encoder, out=args.out, name=args.name,
                            downscale=args.downscale, tile=args.tile, overlap=args.overlap, threshold=args.threshold)
    print(json.dumps({"checkpoint": args.checkpoint, "model": str(out)}))
    return 0


def cmd_models(args) -> int:
    from .registry import list_models

    for card, path in list_models():
        print(json.dumps({"name": card.name, "path": str(path), "architecture": card.architecture, "encoder": card.encoder,
                          "downscale": card.downscale, "tile": card.tile, "metrics": card.metrics}))
    return 0


def cmd_postprocess(args) -> int:
    from .postprocess import PostprocessConfig, postprocess_slide
    from .postprocess.slide import recorded_min_size, recorded_threshold
    from .stores.probability import open_probability

    threshold, min_size = args.threshold, args.min_size
    if threshold is None or min_size is None:
        meta = open_probability(args.prob)[1]
        threshold = recorded_threshold(meta) if threshold is None else threshold
        min_size = recorded_min_size(meta, args.level) if min_size is None else min_size
    config = PostprocessConfig(
        threshold=PostprocessConfig.threshold if threshold is None else threshold, min_size=min_size, fill_holes=not args.no_fill_holes,
        watershed=args.watershed, markers=args.markers, min_distance=args.min_distance, h=args.h, compactness=args.compactness,
    )
    with ProgressBar(f"postprocess {Path(args.prob).name}") as bar:
        result = postprocess_slide(args.prob, args.out, config, level=args.level, block=args.block, progress=bar.update)
    print(json.dumps({"prob": args.prob, **result.as_dict(), "threshold": config.threshold, "min_size": config.min_size}))
    return 0


def cmd_save_threshold(args) -> int:
    from .postprocess import save_best_threshold

    saved = save_best_threshold(args.prob, args.threshold)
    print(json.dumps({"prob": args.prob, "threshold": args.threshold, "saved": str(saved)}))
    return 0


def cmd_evaluate(args) -> int:
    import numpy as np

    from .annotations import parse_shape
    from .metrics import evaluate
    from .postprocess import threshold_curve
    from .postprocess.inputs import load_ground_truth, load_prediction
    from .slide.scale import recorded_scale

    pred = load_prediction(args.pred, parse_shape(args.shape) if args.shape else None)
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
    from .annotations import parse_shape
    from .postprocess.export import export_labels

    shape = parse_shape(args.shape) if args.shape else None
    summary = export_labels(args.labels, args.format, args.out, rle_id=args.id, full_shape=shape, downscale=args.downsample)
    print(json.dumps(summary))
    return 0


# ------------------------------------------------------------------------------------- curation projects


def _pairs(values, option: str, slides: list[str]) -> dict[str, list[str]]:
    """``SLIDE=FILE`` values -> {slide as given: [files]}; SLIDE is a --slide path or its id."""
    known = {}
    for slide in slides:
        known[slide] = slide
        known[slide_stem(slide)] = slide
    out: dict[str, list[str]] = {}
    for value in values or []:
        for at in [i for i, ch in enumerate(value) if ch == "="]:
            if value[:at] in known:
                out.setdefault(known[value[:at]], []).append(value[at + 1 :])
                break
        else:
            raise HubmapInputError(None, f"{option} {value!r}: expected SLIDE=FILE with SLIDE one of the --slide paths or ids")
    return out


class SlideBars:
    """One :class:`ProgressBar` per slide (``project <file name>``), for progress naming its slide in ``details``."""

    def __init__(self):
        self.slide, self.bar = None, None

    def update(self, progress) -> None:
        slide = progress.details["slide"]
        if slide != self.slide:
            self.close()
            self.slide, self.bar = slide, ProgressBar(f"project {Path(slide).name}")
        self.bar.update(progress)

    def close(self, summary: bool = True) -> None:
        if self.bar is not None:
            self.bar.close(summary=summary)
        self.slide, self.bar = None, None


def cmd_project_init(args) -> int:
    from .project.create import NewSlide, create_project

    truths = _pairs(args.ground_truth, "--ground-truth", args.slide or [])
    predictions = _pairs(args.prediction, "--prediction", args.slide or [])
    for slide, files in truths.items():
        if len(files) > 1:
            raise HubmapInputError(slide, "more than one --ground-truth for this slide")
    if args.mpp is not None and not args.slide:
        raise HubmapInputError(None, "--mpp is the µm/px of the --slide slides; give at least one --slide")
    slides = [NewSlide(slide, (truths.get(slide) or [None])[0], tuple(predictions.get(slide, [])))
              for slide in args.slide or []]
    bars = SlideBars()  # shows the pseudo-labels' post-processing
    try:
        project = create_project(args.dir, slides, tile=args.tile, downscale=args.downscale, full_hash=args.full_hash,
                                 mpp=args.mpp, progress=bars.update)
    except BaseException:
        bars.close(summary=False)  # after an error, its one line says enough
        raise
    bars.close()
    print(json.dumps({"project": str(Path(args.dir)), "format_version": project.format_version, "tile": project.tile_size,
                      "downscale": project.downscale, "slides": [s.id for s in project.slides],
                      "scales": {s.id: s.scale.as_dict() for s in project.slides}}))
    return 0


def _slide_line(project, entry) -> dict:
    return {"project": str(project.root), "slide": entry.id, "path": entry.path, "shape": list(entry.shape),
            **entry.scale.as_dict(), "working_shape": list(project.working_shape(entry.id)),
            "hash": entry.hash.as_dict(),
            "ground_truth": entry.ground_truth.file if entry.ground_truth else None,
            "objects": entry.ground_truth.objects if entry.ground_truth else None,
            "predictions": [p.path for p in entry.predictions], "counts": project.review.counts(entry.id)}


def cmd_project_add_slide(args) -> int:
    from .project import open_project
    from .project.build import add_slide

    project = open_project(args.dir)
    with ProgressBar(f"project {Path(args.slide).name}") as bar:  # shows the pseudo-labels' post-processing
        entry = add_slide(project, args.slide, slide_id=args.id, ground_truth=args.ground_truth,
                          predictions=args.prediction or [], full_hash=args.full_hash, rle_id=args.rle_id,
                          mpp=args.mpp, progress=bar.update)
    print(json.dumps(_slide_line(project, entry)))
    return 0


def cmd_project_info(args) -> int:
    from .project import open_project

    project = open_project(args.dir)
    print(json.dumps({"project": str(project.root), "format_version": project.format_version, "tile": project.tile_size,
                      "downscale": project.downscale, "models": project.models, "counts": project.review.counts(),
                      "slides": [_slide_line(project, s) for s in project.slides]}))
    return 0


def cmd_project_queue(args) -> int:
    from .project import open_project, review_queue

    project = open_project(args.dir)
    for entry in review_queue(project, args.slide, top=args.top, include_reviewed=args.all):
        print(json.dumps(entry.as_dict()))
    return 0


def cmd_project_review(args) -> int:
    from .project import open_project, parse_tile_key, set_state

    project = open_project(args.dir)
    entry = set_state(project, args.slide, args.tile, args.state, note=args.note)
    print(json.dumps({"slide": args.slide, "tile": "{},{}".format(*parse_tile_key(args.tile)), **{k: entry[k] for k in ("state", "time", "note")},
                      "counts": project.review.counts(args.slide)}))
    return 0


def cmd_project_dataset(args) -> int:
    from .project import open_project, training_set

    project = open_project(args.dir)
    for item in training_set(project):
        print(json.dumps(item.as_dict()))
    return 0


def _add_project_parser(sub) -> None:
    from .project.manifest import DEFAULT_DOWNSCALE, DEFAULT_TILE
    from .project.review import STATES

    project = sub.add_parser("project", help="curation projects: slides, ground truth, predictions, review, training set")
    psub = project.add_subparsers(dest="project_command", required=True, parser_class=OneLineParser)

    init = psub.add_parser("init", help="make a project folder (one JSON line)")
    init.add_argument("dir", metavar="DIR")
    init.add_argument("--slide", action="append", metavar="SLIDE", help="add this slide; repeat")
    init.add_argument("--ground-truth", action="append", metavar="SLIDE=ANNOTATION",
                      help="a slide's ground truth (GeoJSON, RLE CSV, mask, labels .zarr); SLIDE is its path or id")
    init.add_argument("--prediction", action="append", metavar="SLIDE=PROB.zarr", help="a slide's probability map; repeat for more")
    init.add_argument("--tile", type=int, default=DEFAULT_TILE, help="review tile size at the working scale")
    init.add_argument("--downscale", type=float, default=None,
                      help="working scale: full-resolution pixels per pixel (default: the predictions' scale, "
                           f"else {DEFAULT_DOWNSCALE:g})")
    init.add_argument("--full-hash", action="store_true", help="hash whole slide files (default: quick hash of 12 MiB)")
    add_mpp_option(init, "the --slide slides (recorded in the manifest)")
    init.set_defaults(func=cmd_project_init)

    add = psub.add_parser("add-slide", help="add a slide (with ground truth and predictions) to a project")
    add.add_argument("dir", metavar="DIR")
    add.add_argument("slide", metavar="SLIDE")
    add.add_argument("--id", help="slide id (default: the file stem)")
    add.add_argument("--ground-truth", metavar="ANNOTATION")
    add.add_argument("--rle-id", help="row of an RLE CSV ground truth")
    add.add_argument("--prediction", action="append", metavar="PROB.zarr", help="probability map; repeat for more")
    add.add_argument("--full-hash", action="store_true")
    add_mpp_option(add, "the slide (recorded in the manifest)")
    add.set_defaults(func=cmd_project_add_slide)

    info = psub.add_parser("info", help="the project's slides and review counts (one JSON line)")
    info.add_argument("dir", metavar="DIR")
    info.set_defaults(func=cmd_project_info)

    queue = psub.add_parser("queue", help="tiles to review, most suspicious first (JSON lines)")
    queue.add_argument("dir", metavar="DIR")
    queue.add_argument("--slide", help="one slide id (default: all slides with a prediction)")
    queue.add_argument("--top", type=int, default=None, metavar="K")
    queue.add_argument("--all", action="store_true", help="include reviewed tiles")
    queue.set_defaults(func=cmd_project_queue)

    review = psub.add_parser("review", help="set a tile's review state (one JSON line)")
    review.add_argument("dir", metavar="DIR")
    review.add_argument("--slide", required=True)
    review.add_argument("--tile", required=True, metavar="ROW,COL", help="grid position, as the queue prints it")
    review.add_argument("--state", required=True, choices=sorted(STATES))
    review.add_argument("--note")
    review.set_defaults(func=cmd_project_review)

    dataset = psub.add_parser("dataset", help="what the trainer learns from, one JSON line per tile with provenance")
    dataset.add_argument("dir", metavar="DIR")
    dataset.set_defaults(func=cmd_project_dataset)


def build_parser() -> argparse.ArgumentParser:
    from .inference.config import BLENDS, DEVICES, InferenceConfig
    from .postprocess.config import BLOCK, MARKERS, PostprocessConfig
    from .synth.spec import STAINS, SynthSpec

    parser = OneLineParser(prog="napari-hubmap", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    view = sub.add_parser("view", help="open napari with slides (default: the sample slide) and the widgets docked")
    view.add_argument("slides", nargs="*", metavar="SLIDE")
    view.add_argument("--sample", default=DEFAULT_SAMPLE, choices=["hubmap-pas", "synthetic-pas", "synthetic-he"])
    view.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window after start-up and quit")
    view.add_argument("--predict", nargs="?", const=DEFAULT_MODEL, default="", metavar="MODEL",
                      help=f"run this model on the slide at start-up (default {DEFAULT_MODEL}, shipped in models/)")
    add_mpp_option(view)
    view.set_defaults(func=cmd_view)

    info = sub.add_parser("info", help="print a slide's size, levels, mpp and layout as one JSON line")
    info.add_argument("slides", nargs="+", metavar="SLIDE")
    add_mpp_option(info)
    info.set_defaults(func=cmd_info)

    pyramid = sub.add_parser("pyramid", help="build the pyramid cache of single-level slides")
    pyramid.add_argument("slides", nargs="+", metavar="SLIDE")
    pyramid.set_defaults(func=cmd_pyramid)

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
    predict.add_argument("--batch", type=int, default=inference.batch)
    predict.add_argument("--forward-batch", type=int, default=None,
                         help="tiles per forward call (default: the whole batch on a GPU, 1 on CPU)")
    predict.add_argument("--no-skip-background", action="store_true", help="also run on tiles without tissue")
    add_mpp_option(predict)
    predict.set_defaults(func=cmd_predict)

    models = sub.add_parser("models", help="list the models the registry finds (one JSON line each)")
    models.set_defaults(func=cmd_models)

    imp = sub.add_parser("import-model", help="convert a Kaggle-style .pth state dict into a model folder")
    imp.add_argument("checkpoint", metavar="CHECKPOINT.pth")
    imp.add_argument("--arch", required=True, help="segmentation-models-pytorch architecture, e.g. Unet")
    imp.add_argument("--encoder", required=True, help="encoder name, e.g. efficientnet-b0")
    imp.add_argument("--out", required=True, metavar="DIR")
    imp.add_argument("--name", default=None)
    imp.add_argument("--downscale", type=float, default=2.0)
    imp.add_argument("--tile", type=int, default=512)
    imp.add_argument("--overlap", type=int, default=128)
    imp.add_argument("--threshold", type=float, default=0.5)
    imp.set_defaults(func=cmd_import_model)

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

    post = sub.add_parser("postprocess", help="probability map -> glomerulus instances (labels OME-Zarr), block by block")
    post.add_argument("prob", metavar="PROB.zarr")
    d = PostprocessConfig()
    post.add_argument("--threshold", type=float, default=None,
                      help=f"probability cutoff, >= (default: the models' card threshold, else {d.threshold:g})")
    post.add_argument("--min-size", type=int, default=None,
                      help="remove objects under N pixels at the labels' scale (default: the models' card "
                           "min_object_um2 at the map's recorded µm/px, else 0)")
    post.add_argument("--no-fill-holes", action="store_true", help="keep holes inside objects")
    post.add_argument("--watershed", action="store_true", help="split touching glomeruli")
    post.add_argument("--markers", choices=MARKERS, default=d.markers)
    post.add_argument("--min-distance", type=int, default=d.min_distance, help="pixels between watershed seeds (markers=distance)")
    post.add_argument("--h", type=float, default=d.h, help="h of the h-maxima seeds (markers=h-maxima)")
    post.add_argument("--compactness", type=float, default=d.compactness)
    post.add_argument("--block", type=int, default=BLOCK, help="block size in pixels")
    post.add_argument("--level", type=int, default=0, help="pyramid level of the probability map")
    post.add_argument("--out", required=True, metavar="LABELS.zarr")
    post.set_defaults(func=cmd_postprocess)

    save = sub.add_parser("save-threshold", help="make THRESHOLD the default of the models that made a probability "
                                                  "map: its one model's card, or an ensemble.json beside the map")
    save.add_argument("prob", metavar="PROB.zarr")
    save.add_argument("threshold", type=float, metavar="THRESHOLD", help="probability cutoff in [0, 1] (e.g. "
                                                                         "evaluate --curve's best_threshold)")
    save.set_defaults(func=cmd_save_threshold)

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

    export = sub.add_parser("export", help="labels -> Kaggle RLE CSV, QuPath GeoJSON, OME-Zarr labels or TIFF")
    export.add_argument("labels", metavar="LABELS", help="a labels .zarr (from postprocess) or a label/mask PNG/TIFF")
    export.add_argument("--format", required=True, choices=["rle-csv", "geojson", "ome-zarr", "tiff"])
    export.add_argument("--out", required=True, metavar="OUT")
    export.add_argument("--id", help="RLE row id (default: the slide's file stem)")
    export.add_argument("--shape", help="full-resolution HxW of the slide when LABELS does not record it")
    export.add_argument("--downsample", type=float, default=None, help="downscale of LABELS when it does not record it")
    export.set_defaults(func=cmd_export)

    _add_project_parser(sub)
    from .cli_train import add_train_parser

    add_train_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
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

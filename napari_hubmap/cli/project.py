"""``napari-hubmap project ...``: curation projects (init, add-slide, info, queue, review, dataset), one JSON line
(or JSON lines) per command."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import HubmapInputError
from ..stores.naming import slide_stem
from .common import OneLineParser, add_mpp_option
from .progress_bar import ProgressBar, SlideBars


def add_parsers(sub) -> None:
    project = sub.add_parser("project", help="curation projects: slides, ground truth, predictions, review, training set")
    psub = project.add_subparsers(dest="project_command", required=True, parser_class=OneLineParser)
    _add_init_parser(psub)
    _add_slide_parser(psub)
    _add_review_parsers(psub)


def _add_init_parser(psub) -> None:
    from ..project.manifest import DEFAULT_DOWNSCALE, DEFAULT_TILE

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


def _add_slide_parser(psub) -> None:
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


def _add_review_parsers(psub) -> None:
    from ..project.review import STATES

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


def cmd_project_init(args) -> int:
    from ..project.create import NewSlide, create_project

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
    from ..project import open_project
    from ..project.build import add_slide

    project = open_project(args.dir)
    with ProgressBar(f"project {Path(args.slide).name}") as bar:  # shows the pseudo-labels' post-processing
        entry = add_slide(project, args.slide, slide_id=args.id, ground_truth=args.ground_truth,
                          predictions=args.prediction or [], full_hash=args.full_hash, rle_id=args.rle_id,
                          mpp=args.mpp, progress=bar.update)
    print(json.dumps(_slide_line(project, entry)))
    return 0


def cmd_project_info(args) -> int:
    from ..project import open_project

    project = open_project(args.dir)
    print(json.dumps({"project": str(project.root), "format_version": project.format_version, "tile": project.tile_size,
                      "downscale": project.downscale, "models": project.models, "counts": project.review.counts(),
                      "slides": [_slide_line(project, s) for s in project.slides]}))
    return 0


def cmd_project_queue(args) -> int:
    from ..project import open_project, review_queue

    project = open_project(args.dir)
    for entry in review_queue(project, args.slide, top=args.top, include_reviewed=args.all):
        print(json.dumps(entry.as_dict()))
    return 0


def cmd_project_review(args) -> int:
    from ..project import open_project, parse_tile_key, set_state

    project = open_project(args.dir)
    entry = set_state(project, args.slide, args.tile, args.state, note=args.note)
    print(json.dumps({"slide": args.slide, "tile": "{},{}".format(*parse_tile_key(args.tile)), **{k: entry[k] for k in ("state", "time", "note")},
                      "counts": project.review.counts(args.slide)}))
    return 0


def cmd_project_dataset(args) -> int:
    from ..project import open_project, training_set

    project = open_project(args.dir)
    for item in training_set(project):
        print(json.dumps(item.as_dict()))
    return 0

"""``napari-hubmap train``: the bundled trainer from the command line (and the Training panel's process).

``--events`` prints one JSON object per line on stdout (see :mod:`napari_hubmap.training`), ending
with ``done``, ``cancelled`` (exit 130, after SIGTERM/SIGINT: the run stops at the next step and saves a
resume checkpoint) or ``error`` (exit 2 for bad input). ``--nproc N`` > 1 runs N processes of
DistributedDataParallel through torchrun (gloo on CPU, nccl on CUDA); rank 0 reports and saves.
How a run reports, stops and spreads over processes: :mod:`.train_run`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import HubmapInputError
from ..jsonio import load_json
from .train_run import RunReports, run_torchrun, stop_on_signals


def add_parsers(sub) -> None:
    from ..training.config import TrainConfig
    from ..training.presets import PRESETS

    d = TrainConfig()
    p = sub.add_parser("train", help="train or fine-tune a model on data folders or a curation project")
    p.add_argument("--data", action="append", required=True, metavar="DIR",
                   help="images/ + annotations/ (GeoJSON or LabelMe) or masks/, a folder of such folders, "
                        "or a project; repeatable")
    p.add_argument("--label", action="append", metavar="NAME",
                   help="learn only the annotations of this class (GeoJSON classification, LabelMe label); repeatable")
    base = p.add_mutually_exclusive_group()
    base.add_argument("--preset", choices=sorted(PRESETS), help=f"architecture to train from scratch (default {d.preset})")
    base.add_argument("--base", metavar="MODEL", help="registry model (name or folder) to fine-tune")
    p.add_argument("--out", required=True, metavar="FOLDER", help="the new model folder (card.json + model.safetensors)")
    p.add_argument("--name", default="", help="model name in its card (default: the folder name)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="(default %(default)s)")
    p.add_argument("--samples-per-epoch", type=int, default=d.samples_per_epoch, help="training tiles drawn per epoch (default %(default)s)")
    p.add_argument("--batch", type=int, default=d.batch, help="tiles per step and process (default %(default)s)")
    p.add_argument("--tile", type=int, default=d.tile, help="training tile side at the working scale (default %(default)s)")
    p.add_argument("--infer-tile", type=int, default=d.infer_tile, help="inference tile recorded in the card (default %(default)s)")
    p.add_argument("--target-mpp", type=float, default=d.target_mpp, help="working scale in µm/px (with a preset; default %(default)s)")
    p.add_argument("--downscale", type=float, default=d.downscale, help="working scale when µm/px is unknown")
    p.add_argument("--mpp", action="append", default=[], metavar="FOLDER=MPP",
                   help="µm/px of a data folder's images (default: its dataset.json, else 0.5), or of one "
                        "image (FOLDER/STEM=MPP); repeatable")
    p.add_argument("--mpp-file", type=Path, metavar="JSON",
                   help='µm/px by folder or image, {"FOLDER": MPP, "FOLDER/STEM": MPP}; --mpp wins')
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="add N synthetic regions (PAS and H&E)")
    _add_run_options(p, d)
    p.set_defaults(func=cmd_train)


def _add_run_options(p, d) -> None:
    from ..defaults import DEVICES
    from ..training.augment import COLOUR_AUGMENTS
    from ..training.config import LOSSES, SELECT_BY, SPLITS

    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default %(default)s)")
    p.add_argument("--loss", choices=LOSSES, default=d.loss)
    p.add_argument("--positive-fraction", type=float, default=d.positive_fraction,
                   help="share of tiles centred on a glomerulus (the rest: anywhere in tissue; default %(default)s)")
    p.add_argument("--stain-standardise", action="store_true",
                   help="move every image's tissue colour onto the training set's mean (Reinhard, in CIELAB) "
                        "before training; the card keeps that reference and prediction moves each slide onto it")
    p.add_argument("--colour-augment", choices=COLOUR_AUGMENTS, default=d.colour_augment,
                   help="how far tiles' colours are changed in training: standard; stain (the stain amounts "
                        "jittered 0.5-2x, the rest standard); strong (stain, hue and grey changes all wider), for "
                        "slides of another stain or lab; randstain (standard after moving most tiles' tissue colour "
                        "onto a template drawn from the training images' colours, RandStainNA)")
    p.add_argument("--folds", type=int, default=d.folds)
    p.add_argument("--fold", type=int, default=d.fold)
    p.add_argument("--split", choices=SPLITS, default=d.split, help="k-fold by patient/slide or image")
    p.add_argument("--val-groups", default="", help="comma-separated groups or images always held out for validation")
    p.add_argument("--exclude-groups", default="",
                   help="comma-separated groups or images (SOURCE/STEM) neither trained nor validated on")
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--select-by", choices=SELECT_BY, default=d.select_by,
                   help="what picks the saved epoch on the validation images (default %(default)s)")
    p.add_argument("--workers", type=int, default=d.workers, help="data-loader worker processes")
    p.add_argument("--device", default=d.device, help=f"{', '.join(DEVICES)}, or a torch device such as cuda:1")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.add_argument("--nproc", type=int, default=1, help="processes (DDP through torchrun)")
    p.add_argument("--events", action="store_true", help="JSON lines on stdout")


def _mpp_file(path: Path | None) -> dict[str, float]:
    """The ``--mpp-file`` table: a JSON object of positive numbers."""
    if path is None:
        return {}
    table = load_json(path, "µm/px table")
    if not isinstance(table, dict) or not all(isinstance(v, (int, float)) and v > 0 for v in table.values()):
        raise HubmapInputError(path, 'expected {"FOLDER" or "FOLDER/STEM": µm per pixel > 0, ...}')
    return {str(k): float(v) for k, v in table.items()}


def _mpp_overrides(values: list[str], table: dict[str, float] | None = None) -> dict[str, float]:
    out = dict(table or {})
    for value in values:
        name, _, number = value.partition("=")
        try:
            out[name] = float(number)
        except ValueError:
            raise HubmapInputError(None, f"--mpp {value!r}: expected FOLDER=MPP, e.g. kidney-he=0.45") from None
    return out


def config_of(args):
    from ..training import TrainConfig

    return TrainConfig(
        preset=None if args.base else (args.preset or TrainConfig().preset), base=args.base, name=args.name,
        tile=args.tile, infer_tile=args.infer_tile, downscale=args.downscale, target_mpp=args.target_mpp,
        epochs=args.epochs, samples_per_epoch=args.samples_per_epoch, batch=args.batch, lr=args.lr, loss=args.loss,
        positive_fraction=args.positive_fraction, folds=args.folds, fold=args.fold, split=args.split,
        val_groups=[g for g in args.val_groups.split(",") if g],
        exclude_groups=[g for g in args.exclude_groups.split(",") if g], patience=args.patience,
        select_by=args.select_by, workers=args.workers, stain_standardise=args.stain_standardise,
        colour_augment=args.colour_augment, device=args.device, seed=args.seed, labels=args.label)


def cmd_train(args) -> int:
    if args.nproc < 1:
        raise HubmapInputError(None, f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return run_torchrun(args)
    from ..progress import Cancelled
    from ..training import train

    stop = stop_on_signals()
    reports = RunReports(args.events)
    try:
        config = config_of(args)
        mpp = _mpp_overrides(args.mpp, _mpp_file(args.mpp_file))
        result = train(config, args.data, args.out, mpp=mpp, synthetic=args.synthetic, progress=reports.progress,
                       cancel=stop, resume=not args.no_resume, overwrite=args.overwrite)
    except HubmapInputError as error:
        reports.emit({"event": "error", "message": str(error)})
        raise
    except Cancelled:  # the run saved its resume checkpoint first
        reports.finish()
        return reports.cancelled(Path(args.out))
    reports.finish()
    reports.done(result)
    return 0

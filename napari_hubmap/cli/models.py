"""Model commands: ``models`` (what the registry finds) and ``import-model`` (a Kaggle-style checkpoint)."""

from __future__ import annotations

import json


def add_parsers(sub) -> None:
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


def cmd_models(args) -> int:
    from ..registry import list_models

    for card, path in list_models():
        print(json.dumps({"name": card.name, "path": str(path), "architecture": card.architecture, "encoder": card.encoder,
                          "downscale": card.downscale, "tile": card.tile, "metrics": card.metrics}))
    return 0


def cmd_import_model(args) -> int:
    from ..registry import import_checkpoint

    out = import_checkpoint(args.checkpoint, arch=args.arch, encoder=args.encoder, out=args.out, name=args.name,
                            downscale=args.downscale, tile=args.tile, overlap=args.overlap, threshold=args.threshold)
    print(json.dumps({"checkpoint": args.checkpoint, "model": str(out)}))
    return 0

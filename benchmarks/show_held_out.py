"""A picture of what a generalisation run's model makes of its held-out images, to see *why* it scores as it does.

Each held-out image of ``RUN`` (``benchmarks/generalisation.py``'s runs: ``loso-C003``, ``cv-2``, ...) at the
model's working scale, the ground truth outlined in green and the model's glomeruli (the card's threshold and
minimum size, plain prediction: what ``score`` counts) in yellow, captioned with the image's name, its Dice
and its found / missed / false glomeruli at IoU >= 0.5. Images are shrunk to fit a square cell, in a grid.

    python benchmarks/show_held_out.py RUN [--model FOLDER] [--out PNG] [--cell 320] [--columns 4]

Default model: the run's own (``bench-out/generalisation/<run>``); default picture:
``bench-out/generalisation/<run>.<model>.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from generalisation import OUT, Scorer, held_out_samples, image_dice

TRUTH = (0, 200, 0)
FOUND = (255, 210, 0)
CAPTION_PX = 16


def outlined(image: np.ndarray, truth: np.ndarray, objects: np.ndarray, width: int) -> np.ndarray:
    """``image`` with the outlines of ``truth`` (green) and ``objects`` (yellow), ``width`` px thick."""
    from skimage.morphology import dilation, disk
    from skimage.segmentation import find_boundaries

    out = image.copy()
    for labels, colour in ((truth, TRUTH), (objects, FOUND)):
        edge = find_boundaries(labels, mode="inner")
        out[dilation(edge, disk(max(0, width - 1))) if width > 1 else edge] = colour
    return out


def cell(picture: np.ndarray, caption: str, size: int) -> np.ndarray:
    """``picture`` shrunk to fit ``size`` x ``size`` on white, ``caption`` written above it."""
    from PIL import Image, ImageDraw

    scale = min(1.0, size / max(picture.shape[:2]))
    shrunk = Image.fromarray(picture).resize((max(1, round(picture.shape[1] * scale)),
                                              max(1, round(picture.shape[0] * scale))), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size + CAPTION_PX), "white")
    canvas.paste(shrunk, (0, CAPTION_PX))
    ImageDraw.Draw(canvas).text((2, 2), caption, fill="black")
    return np.asarray(canvas)


def grid(cells: list[np.ndarray], columns: int) -> np.ndarray:
    rows = [cells[i:i + columns] for i in range(0, len(cells), columns)]
    blank = np.full_like(cells[0], 255)
    return np.concatenate([np.concatenate(row + [blank] * (columns - len(row)), axis=1) for row in rows], axis=0)


def picture(run: str, model: Path, size: int, columns: int) -> tuple[np.ndarray, dict]:
    """The grid of ``run``'s held-out images as ``model`` sees them, and the counts it shows."""
    from skimage.measure import label

    from napari_hubmap.metrics import object_scores

    scorer = Scorer([model])
    cells, totals = [], np.zeros(3, int)
    for sample in held_out_samples(run, scorer.card):
        objects = scorer.objects(sample.image)
        truth = label(sample.mask.astype(bool), connectivity=2)
        found = object_scores(objects, truth)
        totals += (found.tp, found.fn, found.fp)
        width = max(1, round(max(sample.image.shape[:2]) / size))  # about 1 px once shrunk
        caption = (f"{sample.name.split('/', 1)[-1]}  Dice {image_dice(objects > 0, truth > 0):.2f}  "
                   f"found {found.tp} missed {found.fn} false {found.fp}")
        cells.append(cell(outlined(sample.image, truth, objects, width), caption, size))
    if not cells:
        raise SystemExit(f"{run}: no held-out images")
    return grid(cells, columns), dict(zip(("found", "missed", "false"), (int(t) for t in totals)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--model", type=Path, help="model folder (default: the run's own)")
    parser.add_argument("--out", type=Path, help="PNG to write")
    parser.add_argument("--cell", type=int, default=320, help="cell size in px")
    parser.add_argument("--columns", type=int, default=4)
    args = parser.parse_args()
    model = args.model or OUT / args.run
    out = args.out or OUT / f"{args.run}.{model.name}.png"
    image, totals = picture(args.run, model, args.cell, args.columns)
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(out)
    print(f"{out}: {totals}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

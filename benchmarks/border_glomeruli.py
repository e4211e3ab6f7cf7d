"""Which held-out glomeruli a generalisation run's model finds, split by whether the image's border cuts them.

A tile cut from a slide (AIDPATH's 1024 px biopsy tiles, HuBMAP's 1600 x 1200 ones) cuts some glomeruli at its
edge; a whole slide has none. For each model, the ground-truth glomeruli of ``RUN``'s held-out images that touch the
image border and those that do not, each counted found when one of the model's glomeruli (its card's picks, one
pass, plain: what ``generalisation.py score`` counts) is matched to it at IoU >= 0.5 (``metrics.match_objects``). ``--pad PX`` also scores every
image padded by PX px on each side before the pass, mirrored (``reflect``) or with a flat colour (``white``,
``black``), then cropped back: whether what lies beyond the border changes what is found there.
``--exempt-cut`` also scores with the objects that touch the border kept whatever their size (the card's size floor
judges whole glomeruli; a cut one's size is unknown).

    python benchmarks/border_glomeruli.py RUN MODEL_FOLDER... [--pad 64] [--exempt-cut]

Session 29, the recipe's two AIDPATH-left-out runs (``loso-pas-tiles``; 12 tiles, 13 glomeruli, 10 cut by the
border): ``-s26`` finds 2 of 10 cut and 2 of 3 whole, ``@seed1`` 0 of 10 and 1 of 3; HuBMAP left out
(``loso-hubmap-pas-s26``, 110 tiles) 137 of 166 cut and 246 of 280 whole. Padded by 64 px the AIDPATH figures do not
rise (mirrored: 4 and 1 found, as one pass's own 32 px mirror; white: 3 and 0; black: none). With the cut objects
exempt from the size floor, ``-s26`` finds the same 4 and marks 6 false (F1 0.444 -> 0.348), ``@seed1`` the same 1
(0.118 -> 0.100).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from generalisation import Scorer, held_out_figures, held_out_samples

PADDINGS = {"reflect": None, "white": 240, "black": 0}
"""What ``--pad`` puts beyond the border: the image mirrored, or a flat grey level (glass is about 240)."""


def touches_border(bbox: tuple[int, int, int, int], shape: tuple[int, ...]) -> bool:
    """Whether a region's bounding box (y0, x0, y1, x1) reaches the edge of an image of ``shape``."""
    y0, x0, y1, x1 = bbox
    return min(y0, x0) == 0 or y1 == shape[0] or x1 == shape[1]


def border_split(scorer: Scorer, samples: list, maps: list) -> dict[str, list[int]]:
    """{"cut": [found, total], "whole": [found, total]}: ground-truth glomeruli by whether they touch the border,
    found where ``napari_hubmap.metrics.match_objects`` pairs one with an object of the card's picks (what
    ``generalisation.py score`` counts); ``maps``: each sample's probability map."""
    from skimage.measure import label, regionprops

    from napari_hubmap.metrics import match_objects

    counts = {"cut": [0, 0], "whole": [0, 0]}
    for sample, probability in zip(samples, maps):
        truth = label(sample.mask.astype(bool), connectivity=2)
        found = {gt for _, gt, _ in match_objects(scorer.objects_of(probability), truth)}
        for region in regionprops(truth):
            kind = "cut" if touches_border(region.bbox, truth.shape) else "whole"
            counts[kind][0] += region.label in found
            counts[kind][1] += 1
    return counts


def exempt_cut_figures(scorer: Scorer, samples: list, maps: list) -> dict:
    """Mean Dice and pooled object figures with the objects touching the border kept whatever their size."""
    from skimage.measure import label, regionprops

    from generalisation import image_dice, object_figures
    from napari_hubmap.metrics import object_scores

    dices, counts = [], np.zeros(3, int)
    for sample, probability in zip(samples, maps):
        unfloored = scorer.objects_of(probability, min_size=1)
        kept = np.zeros_like(unfloored)
        for region in regionprops(unfloored):
            if touches_border(region.bbox, kept.shape) or region.area >= scorer.min_size:
                kept[unfloored == region.label] = region.label
        truth = sample.mask.astype(bool)
        dices.append(image_dice(kept > 0, truth))
        scores = object_scores(kept, label(truth, connectivity=2))
        counts += (scores.tp, scores.fp, scores.fn)
    return {"dice": float(np.mean(dices)), **object_figures(*(int(c) for c in counts))}


def padded_prediction(pad: int, fill: int | None):
    """``training.validate.predict_image`` on the image padded by ``pad`` px (mirrored, or ``fill``), cropped back."""
    from napari_hubmap.training import validate

    plain = validate.predict_image

    def predict(module, image, normalization, device, tta=("identity",)):
        widths = ((pad, pad), (pad, pad), (0, 0))
        big = np.pad(image, widths, mode="reflect") if fill is None else np.pad(image, widths, constant_values=fill)
        return plain(module, big, normalization, device, tta)[pad:-pad, pad:-pad]

    return predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--pad", type=int, default=0, help="also score each image padded by this many px a side")
    parser.add_argument("--exempt-cut", action="store_true", help="also score with cut objects exempt from the floor")
    args = parser.parse_args()
    from napari_hubmap.training import validate

    for folder in args.models:
        scorer = Scorer([folder])
        samples = held_out_samples(args.run, scorer.card)
        maps = [scorer.map_of(sample) for sample in samples]  # one pass each, for the split and the exemption
        split = border_split(scorer, samples, maps)
        print(f"{folder.name}: cut by the border {split['cut'][0]} of {split['cut'][1]} found, "
              f"whole {split['whole'][0]} of {split['whole'][1]}", flush=True)
        if args.exempt_cut:
            f = exempt_cut_figures(scorer, samples, maps)
            print(f"  cut objects exempt from the size floor: Dice {f['dice']:.3f} object F1 {f['object_f1']:.3f} "
                  f"(found {f['tp']}, false {f['fp']}, missed {f['fn']})", flush=True)
        if not args.pad:
            continue
        plain = validate.predict_image
        for name, fill in PADDINGS.items():
            validate.predict_image = padded_prediction(args.pad, fill)
            try:
                f = held_out_figures(scorer, samples)
            finally:
                validate.predict_image = plain
            print(f"  padded {args.pad} px, {name}: Dice {f['dice']:.3f} object F1 {f['object_f1']:.3f} "
                  f"(found {f['tp']}, false {f['fp']}, missed {f['fn']})", flush=True)


if __name__ == "__main__":
    main()

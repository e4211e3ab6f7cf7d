"""Does growing each found glomerulus by a few pixels bring its outline to the annotated one? Measured, not shipped.

The recipe's models pick high thresholds (0.85-0.95) on their validation images, which keeps false glomeruli
out but trims the found ones to their tuft, while HuBMAP's outlines take in Bowman's capsule
(``show_held_out.py`` shows it): a found glomerulus can miss IoU 0.5. Here every object of the product's
default post-processing (``generalisation.Scorer``: the card's threshold and minimum size, holes filled) is
grown by ``g`` working pixels into the background as ``postprocess --grow g`` grows it
(:mod:`napari_hubmap.postprocess.grow`), for g in ``GROWS``.

Honest by construction: ``g`` is picked on the run's own *validation* images (the ones that picked its epoch
and threshold), by pooled object F1 and, separately, by mean Dice; the held-out images are scored at each pick
and at 0 (the sweep over every ``g`` on them is reported as well, marked as looked at, not for choosing).

    python benchmarks/grow_objects.py RUN [RUN ...] [--model FOLDER]

Writes ``benchmarks/grow-scores/<run>.<model>.json`` and prints one line per run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from generalisation import OUT, ROOT, Scorer, held_out_samples, image_dice, object_figures, validation_samples

GROW_SCORES = ROOT / "benchmarks" / "grow-scores"
"""One JSON per run and model (apart from ``generalisation-scores``, whose files are all ``score`` results)."""
GROWS = (0, 1, 2, 3, 4, 5)
"""Working pixels (3 µm at the recipe's scale)."""


def sweep(scorer: Scorer, samples: list) -> dict[int, dict]:
    """Mean per-image Dice and pooled object figures of ``samples`` for every grow of :data:`GROWS`."""
    from skimage.measure import label

    from napari_hubmap.metrics import object_scores

    dices = {g: [] for g in GROWS}
    counts = {g: np.zeros(3, int) for g in GROWS}
    for sample in samples:
        probability = scorer.probability(sample.image)
        truth = sample.mask.astype(bool)
        truth_labels = label(truth, connectivity=2)
        for g in GROWS:
            grown = scorer.objects_of(probability, grow=g)
            dices[g].append(image_dice(grown > 0, truth))
            found = object_scores(grown, truth_labels)
            counts[g] += (found.tp, found.fp, found.fn)
    return {g: {"dice": float(np.mean(dices[g])), **object_figures(*(int(c) for c in counts[g]))} for g in GROWS}


def pick(figures: dict[int, dict], by: str) -> int:
    """The grow with the best ``by`` (``object_f1`` or ``dice``), the other breaking ties, then the smaller."""
    other = "dice" if by == "object_f1" else "object_f1"
    return max(GROWS, key=lambda g: (round(figures[g][by], 6), round(figures[g][other], 6), -g))


def measure(run: str, model: Path) -> dict:
    scorer = Scorer([model])
    on_validation = sweep(scorer, validation_samples(run, scorer.card))
    chosen = {by: pick(on_validation, by) for by in ("object_f1", "dice")}
    on_held_out = sweep(scorer, held_out_samples(run, scorer.card))
    return {"run": run, "model": str(model), "threshold": scorer.threshold, "min_size_px": scorer.min_size,
            "target_mpp": scorer.card.target_mpp, "grow_px": chosen,
            "held_out": {"grow_0": on_held_out[0], **{f"grow_by_{by}": on_held_out[g] for by, g in chosen.items()}},
            "validation_sweep": {str(g): f for g, f in on_validation.items()},
            "held_out_sweep (looked at, not for choosing)": {str(g): f for g, f in on_held_out.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--model", type=Path, help="model folder (default: each run's own)")
    args = parser.parse_args()
    for run in args.runs:
        model = args.model or OUT / run
        result = measure(run, model)
        GROW_SCORES.mkdir(parents=True, exist_ok=True)
        (GROW_SCORES / f"{run}.{model.name}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        held = result["held_out"]
        for by, g in result["grow_px"].items():
            before, after = held["grow_0"], held[f"grow_by_{by}"]
            print(f"{run} ({model.name}): grow {g} px picked by validation {by}; held out Dice {before['dice']:.3f} -> "
                  f"{after['dice']:.3f}, object F1 {before['object_f1']:.3f} -> {after['object_f1']:.3f}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

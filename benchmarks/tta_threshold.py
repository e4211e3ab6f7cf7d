"""Flip TTA at a threshold picked for it, on a run's validation images, then scored on its held-out ones. Measured.

The recipe's models pick thresholds of 0.85-0.95 on their plain (one-pass) validation predictions. Averaging the
four flips (``predict --tta flips``) smooths the probabilities, and the average of four passes rarely clears such a
cut: at the card's threshold the flip TTA scored lower than one pass on every held-out task (``models/README.md``,
e.g. HuBMAP left out Dice 0.660 plain, 0.444 flips). This picks the threshold and the outline threshold again
on the *flip-averaged* validation predictions, the trainer's way (``training.validate.probability_scores``: the
threshold of best per-source Dice over the trainer's grid, the card's size floor kept, then the outline of best
per-source Dice), and scores the held-out images with flips at those picks, beside one pass and flips at the
card's own picks.

    python benchmarks/tta_threshold.py RUN [RUN ...] [--model FOLDER]

Writes ``benchmarks/tta-scores/<run>.<model>.json`` and prints one line per run and way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from generalisation import OUT, ROOT, Scorer, flip_average, held_out_figures, held_out_samples, validation_samples

SCORES = ROOT / "benchmarks" / "tta-scores"


def flips_picks(scorer: Scorer, run: str) -> dict:
    """Threshold and outline threshold of the flip-averaged predictions on ``run``'s validation images."""
    from napari_hubmap.training import TrainConfig
    from napari_hubmap.training.validate import probability_scores

    model = scorer.models[0]
    samples = validation_samples(run, scorer.card)
    probs = [flip_average(model.module, s.image, scorer.card.normalization, scorer.device) for s in samples]
    picked = probability_scores(samples, probs, TrainConfig().thresholds, (scorer.min_size,))
    return {"threshold": picked["threshold"], "outline_threshold": picked["outline_threshold"],
            "validation_dice": picked["outline_dice"], "validation_images": len(samples)}


def study(run: str, folder: Path) -> dict:
    import torch

    torch.set_grad_enabled(False)
    scorer = Scorer([folder])
    card_threshold, card_outline = scorer.threshold, scorer.outline
    picks = flips_picks(scorer, run)
    samples = held_out_samples(run, scorer.card)
    ways = {"plain": (False, card_threshold, card_outline), "flips_at_card": (True, card_threshold, card_outline),
            "flips_at_own": (True, picks["threshold"], picks["outline_threshold"])}
    return {"run": run, "model": folder.name, "images": len(samples), "flips_picks": picks,
            **{way: {"threshold": threshold, "outline_threshold": outline,
                     **held_out_figures(scorer, samples, flips, threshold, outline)}
               for way, (flips, threshold, outline) in ways.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--model", type=Path, help="default: the run's own model in bench-out/generalisation")
    args = parser.parse_args()
    SCORES.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        folder = args.model or OUT / run
        result = study(run, folder)
        (SCORES / f"{run}.{folder.name}.json").write_text(json.dumps(result, indent=1) + "\n")
        for way in ("plain", "flips_at_card", "flips_at_own"):
            r = result[way]
            print(f"{run:22} {way:14} thr {r['threshold']:.2f} outline {r['outline_threshold']} images {result['images']:3d} "
                  f"Dice {r['dice']:.3f} P {r['object_precision']:.3f} R {r['object_recall']:.3f} "
                  f"F1 {r['object_f1']:.3f}", flush=True)


if __name__ == "__main__":
    main()

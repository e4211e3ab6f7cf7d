"""Post-processing settings picked on a run's validation images, then scored on its held-out ones. Measured.

Three settings of the product's default post-processing (``generalisation.Scorer``: the card's threshold and
minimum size, holes filled) are swept here, each alone:

- ``grow``: every object grown by ``g`` working pixels into the background, as ``postprocess --grow g`` grows
  it (:mod:`napari_hubmap.postprocess.grow`), for g in 0-5. The recipe's models pick high thresholds (0.85-0.95)
  on their validation images, which keeps false glomeruli out but trims the found ones to their tuft, while
  HuBMAP's outlines take in Bowman's capsule (``show_held_out.py`` shows it): a found glomerulus can miss IoU 0.5.
- ``floor``: the smallest object kept, as a multiple of the annotation floor (half the 1st-percentile area of the
  model's whole training glomeruli, what the trainer multiplies): 1-4 times, each in working pixels as the trainer
  rounds it (``training.sizes.floor_px``), whatever floor the card now holds. The false glomeruli the models mark are mostly small (tubule
  cross-sections, specks that clear the threshold), and a found glomerulus is smaller than its outline.

- ``outline``: the outline threshold (post-processing's hysteresis, ``postprocess --outline-threshold``): each object
  found at the card's threshold spreads over the pixels connected to it down to 0.8 ... 0.3 (1: none), the choices the
  trainer tries (``training.validate.OUTLINE_CHOICES``; the trainer picks by per-source Dice, ``generalisation.py
  outline``).

Honest by construction: the value is picked on the run's own *validation* images (the ones that picked its
epoch and threshold), by pooled object F1 and, separately, by mean Dice; the held-out images are scored at each
pick and at the reference value (the sweep over every value on them is reported as well, marked as looked at, not
for choosing).

    python benchmarks/object_settings.py RUN [RUN ...] [--model FOLDER] [--setting grow|floor|outline]

Writes ``benchmarks/<setting>-scores/<run>.<model>.json`` and prints one line per run and pick.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_hubmap.training.sizes import FLOOR_CHOICES
from napari_hubmap.training.validate import OUTLINE_CHOICES
from generalisation import (OUT, ROOT, Scorer, annotation_floor_um2, held_out_samples, image_dice, object_figures, run_samples,
                            validation_samples)


@dataclass(frozen=True)
class Setting:
    """One post-processing setting: the values swept (the first is the reference: no growth, 1x the annotation
    floor), what they mean."""

    values: tuple
    unit: str
    key: str
    """The result's name for the picked values (``grow_px``, ``floor_times``)."""

    def bind(self, scorer: Scorer, loaded: list) -> dict:
        """What :meth:`objects` needs of the run, besides the model (``loaded``: its data, ``run_samples``)."""
        return {}

    def objects(self, scorer: Scorer, probability: np.ndarray, value, bound: dict) -> np.ndarray:
        raise NotImplementedError


class Grow(Setting):
    def objects(self, scorer, probability, value, bound):
        return scorer.objects_of(probability, grow=value)


class Floor(Setting):
    def bind(self, scorer, loaded):
        """Each multiple's floor in working px, as the trainer rounds it (the card's own px without a scale)."""
        from napari_hubmap.training.sizes import floor_multiples_um2, floor_px
        from napari_hubmap.training.validate import MIN_OBJECT_PX

        mpp, base = scorer.card.target_mpp, annotation_floor_um2(scorer.card, loaded)
        if not (mpp and base):
            return {v: int(round(scorer.min_size * v)) for v in self.values}
        return {v: floor_px(um2, mpp, MIN_OBJECT_PX) for v, um2 in floor_multiples_um2(base).items()}

    def objects(self, scorer, probability, value, bound):
        return scorer.objects_of(probability, min_size=bound[value])


class Outline(Setting):
    def objects(self, scorer, probability, value, bound):
        """The card's objects (its threshold and floor), each spread over the connected pixels down to ``value``, as
        ``postprocess --outline-threshold`` spreads them (1: outlines at the threshold)."""
        return scorer.objects_of(probability, outline=value)


SETTINGS = {"grow": Grow((0, 1, 2, 3, 4, 5), "px", "grow_px"),
            "outline": Outline(OUTLINE_CHOICES, "outline threshold", "outline_threshold"),
            "floor": Floor(FLOOR_CHOICES, "x the annotation floor", "floor_times")}
"""Grow: working pixels (3 µm at the recipe's scale); floor: multiples of the annotation floor (``Floor.bind``)."""


def scores_folder(setting: str) -> Path:
    """Where a setting's results are kept (one JSON per run and model, apart from ``generalisation-scores``)."""
    return ROOT / "benchmarks" / f"{setting}-scores"


def sweep(scorer: Scorer, samples: list, setting: Setting, bound: dict) -> dict:
    """Mean per-image Dice and pooled object figures of ``samples`` for every value of ``setting``."""
    from skimage.measure import label

    from napari_hubmap.metrics import object_scores

    dices = {v: [] for v in setting.values}
    counts = {v: np.zeros(3, int) for v in setting.values}
    for sample in samples:
        probability = scorer.probability(sample.image)
        truth = sample.mask.astype(bool)
        truth_labels = label(truth, connectivity=2)
        for v in setting.values:
            objects = setting.objects(scorer, probability, v, bound)
            dices[v].append(image_dice(objects > 0, truth))
            found = object_scores(objects, truth_labels)
            counts[v] += (found.tp, found.fp, found.fn)
    return {v: {"dice": float(np.mean(dices[v])), **object_figures(*(int(c) for c in counts[v]))} for v in setting.values}


def pick(figures: dict, by: str, values: tuple):
    """The value with the best ``by`` (``object_f1`` or ``dice``), the other breaking ties, then the earlier
    (the card's own value first, then the mildest change)."""
    other = "dice" if by == "object_f1" else "object_f1"
    return max(values, key=lambda v: (round(figures[v][by], 6), round(figures[v][other], 6), -values.index(v)))


def measure(run: str, model, setting_name: str) -> dict:
    setting = SETTINGS[setting_name]
    scorer = Scorer([model])
    loaded = run_samples(run, scorer.card)
    bound = setting.bind(scorer, loaded)
    on_validation = sweep(scorer, validation_samples(run, scorer.card, loaded), setting, bound)
    chosen = {by: pick(on_validation, by, setting.values) for by in ("object_f1", "dice")}
    on_held_out = sweep(scorer, held_out_samples(run, scorer.card), setting, bound)
    reference = setting.values[0]
    return {"run": run, "model": str(model), "setting": setting_name, "unit": setting.unit,
            "threshold": scorer.threshold, "min_size_px": scorer.min_size, "target_mpp": scorer.card.target_mpp,
            **({"bound": {f"{v:g}": b for v, b in bound.items()}} if bound else {}), setting.key: chosen,
            "held_out": {f"{setting_name}_{reference:g}": on_held_out[reference],
                         **{f"{setting_name}_by_{by}": on_held_out[v] for by, v in chosen.items()}},
            "validation_sweep": {f"{v:g}": f for v, f in on_validation.items()},
            "held_out_sweep (looked at, not for choosing)": {f"{v:g}": f for v, f in on_held_out.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--model", type=Path, help="model folder (default: each run's own)")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="grow")
    args = parser.parse_args()
    for run in args.runs:
        model = args.model or OUT / run
        result = measure(run, model, args.setting)
        folder = scores_folder(args.setting)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{run}.{model.name}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        held, reference = result["held_out"], SETTINGS[args.setting].values[0]
        for by, v in result[SETTINGS[args.setting].key].items():
            before, after = held[f"{args.setting}_{reference:g}"], held[f"{args.setting}_by_{by}"]
            print(f"{run} ({model.name}): {args.setting} {v} {SETTINGS[args.setting].unit} picked by validation {by}; "
                  f"held out Dice {before['dice']:.3f} -> {after['dice']:.3f}, "
                  f"object F1 {before['object_f1']:.3f} -> {after['object_f1']:.3f}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

"""How the default model's recipe does on tissue it never saw: leave-one-source-out and 5-fold CV.

Runs (each trains the recipe below with the bundled trainer, with ``--exclude-groups`` so the held-out
images are neither trained nor validated on; epoch and threshold are chosen on a random fifth of the
*training* images):

- ``loso-hubmap-pas``, ``loso-pas-tiles``: without that PAS source; scored on all of it;
- ``loso-C003``, ``loso-C004``: without that H&E patient; scored on its images;
- ``cv-0`` .. ``cv-4``: without one fifth of ``hubmap-pas`` (tile groups: the tiles sorted by number,
  five contiguous blocks, so neighbouring tiles stay together); scored on that fifth;
- ``adapt-pas-tiles`` (``adapt-<source>``): the product's loop on a lab it never saw, measured. The ``loso-<source>``
  model of the same variant is fine-tuned (``train --base``, :data:`ADAPT_EPOCHS` epochs, the recipe's other settings,
  as the Training panel runs it) on every other source plus the first :data:`ADAPT_TILES` images of ``<source>`` (the
  ones a user would correct first); scored on the rest of ``<source>``, which the base model is scored on too
  (``score adapt-pas-tiles@colour --model bench-out/generalisation/loso-pas-tiles@colour``): before and after;
- ``all``: every source, nothing held out: the model that ships (its epochs taken from the CV runs); ``score all``
  scores it on its real validation images (a random fifth that picked its epoch and threshold: not unseen, but
  the same images for every ``all@VARIANT``, so variants compare like for like);
- ``RUN@VARIANT``: run ``RUN`` with a recipe alternative of ``VARIANTS`` (how the recipe was chosen).

Scores per held-out image at the model's working scale (each image at its own µm/px, masks resampled
the same way), of what the product's default post-processing makes of the prediction (the card's
threshold, holes filled, objects under the card's ``min_object_um2`` dropped, and always under
``MIN_OBJECT_PX`` working pixels): pixel Dice per image (Kaggle: 1 when both prediction and truth are
empty), their mean, and pooled object precision / recall / F1 at IoU >= 0.5, with and without flip TTA.
By default each image goes through the network in one pass (as the trainer validates); ``--through predict``
runs each image file through the product's ``predict_slide`` at its µm/px instead (the card's tiles, Gaussian
blending, tissue skip, the 8-bit store: what ``napari-hubmap predict`` gives a user), written as
``<run>.<model>.predict.json``. The two differ most on images barely larger than a tile, whose borders the
network sees differently (AIDPATH's 1024 px tiles are 171 px at 3 µm/px).

    python benchmarks/generalisation.py train RUN [RUN ...] [--epochs N] [--threads 1]
    python benchmarks/generalisation.py score RUN [RUN ...] [--model FOLDER]   # e.g. the shipped default
    python benchmarks/generalisation.py score RUN --through predict  # each image file through predict_slide
    python benchmarks/generalisation.py ship RUN      # install that run's model as models/hubmap-default
    python benchmarks/generalisation.py floor RUN [--model FOLDER]  # card's min_object_um2 picked as the trainer does
    python benchmarks/generalisation.py outline RUN [--model FOLDER]  # card's outline_threshold, the same way
    python benchmarks/generalisation.py tta RUN [--model FOLDER]      # card's tta_picks (flips, d4), the same way
    python benchmarks/generalisation.py rethreshold RUN   # card's threshold again, on its validation images
    python benchmarks/generalisation.py table         # every score as a markdown row, CV folds pooled per model

Models go to ``bench-out/generalisation/<run>``, logs beside them; ``score`` writes
``benchmarks/generalisation-scores/<run>.<model>.json`` (committed, so figures outlive the machine that
trained the run) and prints one table row per run and TTA. ``ship`` installs a run's model as
``models/hubmap-default`` (one atomic folder swap) with every run's own held-out figures in its card as
``metrics["generalisation"]``; ``record`` puts the figures scored since into the shipped card (weights untouched).

    python benchmarks/generalisation.py record        # the card's metrics["generalisation"]["runs"] again
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_HUBMAP_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "bench-out" / "generalisation"
SCORES = ROOT / "benchmarks" / "generalisation-scores"
"""Every ``score`` result, committed: ``<run>.<model>.json`` (the models themselves stay in ``OUT``)."""
MPP_FILE = ROOT / "benchmarks" / "shared-data-mpp.json"
SOURCES = ("hubmap-pas", "pas-tiles", "kidney-he", "hubmap-16x")
CV_FOLDS = 5
RECIPE = {"--preset": "effnet-unet", "--target-mpp": "3", "--tile": "160", "--infer-tile": "384", "--batch": "16",
          "--samples-per-epoch": "1280", "--lr": "2e-3", "--synthetic": "4", "--split": "image",
          "--positive-fraction": "0.3", "--epochs": "24", "--select-by": "object_f1"}
"""The shipped recipe's trainer options (besides data and exclusions)."""
VARIANTS = {
    "s640": {"--samples-per-epoch": "640"},
    "sd": {"--samples-per-epoch": "640", "--select-by": "dice"},
    "e12": {"--samples-per-epoch": "640", "--epochs": "12", "--select-by": "dice"},
    "pf60": {"--samples-per-epoch": "640", "--positive-fraction": "0.6", "--epochs": "12", "--select-by": "dice"},
    "std": {"--stain-standardise": ""},
    "t256": {"--tile": "256", "--batch": "8", "--samples-per-epoch": "512"},
    "m2": {"--target-mpp": "2", "--tile": "224", "--batch": "8", "--samples-per-epoch": "640"},
    "s1920": {"--samples-per-epoch": "1920"},
    "h200": {},
    "seed1": {"--seed": "1"},
    "colour": {"--colour-augment": "strong"},
    "stain": {"--colour-augment": "stain"},
    "stain1": {"--colour-augment": "stain", "--seed": "1"},
    "r18": {"--preset": "unet-resnet18"},
    "randstain": {"--colour-augment": "randstain"},
    "twin": {"--seed": "1"},
    "mixstyle": {},
}
"""Recipe alternatives measured against ``RECIPE``: run ``cv-0@e12`` is run ``cv-0`` with that change.
``mixstyle``: the recipe's options, trained by ``benchmarks/mixstyle.py`` (MixStyle hooks on the encoder's early
blocks; ``train`` here runs it without them).
``pf60`` (six tiles in ten centred on a glomerulus, the trainer's default) was the recipe of the
previous default; on cv-0 (12 epochs, default post-processing) it gave Dice 0.658 / object F1 0.669
against 0.703 / 0.723 with 0.3 (``e12``), which marks fewer false glomeruli in tubules and at tissue
edges. ``e12``: the recipe at 12 epochs, the shipped default before 24 were measured on every fold.
``sd``: the saved epoch picked by mean per-image validation Dice; on the run ``all`` it picked epoch 12 of
22 because two coarse ``hubmap-16x`` validation tiles swung between Dice 0.18 and 0.65 from epoch to
epoch while every other source kept improving (object F1 0.60 at epoch 12, 0.66 at 22). ``std``: every image's tissue colour moved onto the training images' mean (Reinhard, CIELAB), as prediction
then moves each slide (the card's ``stain_reference``); ``loso-pas-tiles@std``: Dice 0.277 / object F1 0.300 on
``pas-tiles`` against 0.279 / 0.400 without (no gain; not in the recipe). ``s640``: 640 tiles
an epoch, the default before 1280 (twice the steps in the same 24 epochs) was measured: on cv-0 the same
held-out Dice (0.813 against 0.822 plain) and object F1 (0.852 against 0.841), but on the run ``all``'s 31
validation images Dice 0.78 / object F1 0.80 against 0.55 / 0.65, and per-image Dice 0.83 against 0.74 on
its own 92 HuBMAP training tiles (it underfit). ``t256`` (more context: 768 µm tiles at 3 µm/px) and ``m2`` (more
detail: 2 µm/px, 224 px tiles, about the recipe's 480 µm) keep the recipe's pixels per epoch (so its time):
fewer, larger tiles in batches of 8. On the hard fold cv-2 neither helped: ``t256`` (kept epoch 19, threshold 0.85)
Dice 0.701 / object F1 0.647, ``m2`` (kept epoch 16, threshold 0.85) 0.720 / 0.674, against the recipe's 0.749 / 0.735
(plain; more false glomeruli: precision 0.57 and 0.59 against 0.67). ``s1920``: 1920 tiles an epoch (1.5 times the
recipe's steps); ``h200``: the recipe itself, named apart for runs trained on a lent GPU (``device_generalisation.sh``:
float16, the compacted data), the control of that machine's ``s1920`` runs; ``seed1``: the recipe with another seed
(the spread between two runs of one recipe); ``colour``: wider colour changes in training (``--colour-augment
strong``): better on a source left out (H&E patient C003 +0.16 Dice), 0.02-0.03 Dice lower on both HuBMAP folds
measured, and ``all@colour`` 0.750 against the shipped 0.819 on its validation images (not the recipe); ``stain`` (``--colour-augment stain``): ``colour``'s wide stain jitter alone, with
the recipe's hue, brightness and grey tiles, the step between the two: on cv-0 Dice 0.857 / object F1 0.899 against
the recipe's 0.822 / 0.841, on H&E patient C003 left out 0.638 against 0.468 (``colour``: 0.626), at 1x the annotation
floor, and on the hard fold cv-2 0.823 / 0.824 against the recipe's 0.776-0.796 / 0.781-0.814 (each at its card's picks), but ``all@stain`` 0.769 against the shipped 0.818 on its validation images, and with AIDPATH left out 0.214 / 0.316
against the recipe's 0.279 / 0.400 (not the recipe, by the rule of ``models/README.md``); ``stain1``: ``stain`` with seed 1 (``loso-pas-tiles@stain1``: its second run with AIDPATH left out; ``all@stain1``: its second all-source run, validated on the shipped model's validation images as ``all@twin`` is); ``r18``: the network alone changed, a U-Net on ResNet-18 (14.3 M parameters, dense convolutions) in place
of EfficientNet-B0 (depthwise ones), about as fast a step on this CPU: worse on cv-2 (Dice 0.708 / object F1 0.687)
and on HuBMAP left out (0.538 / 0.497); ``randstain`` (``--colour-augment randstain``, RandStainNA): tiles moved onto
CIELAB templates drawn from the training images' colours, in place of the stain jitter: with AIDPATH left out the best
Dice yet (0.436 against the recipe's 0.279) but object F1 0.333 against 0.400 (the same 4 of 13 found, 7 false against
3), so not the recipe by the rule of ``models/README.md``; ``twin``: the recipe with seed 1, validated on the shipped
model's own validation images (its card's list; the seed would otherwise draw another fifth), so that the two
all-source runs can be averaged and the ensemble scored on images neither trained on: ``all@twin`` alone 0.774 / object
F1 0.831 through ``predict`` on those 31 images, the shipped model 0.824 / 0.888, the two averaged 0.797 / 0.876 (not
shipped). Figures: ``models/README.md``."""


SEED_TWINS = ("twin", "stain1")
"""Variants that only draw another seed: their all-source run (``all@twin``, ``all@stain1``) validates on the shipped
model's own validation images, so that it and the shipped model are scored on the same images, neither trained on."""


def variant_of(run: str) -> str:
    """The recipe variant of ``RUN@VARIANT`` ("" for the recipe itself)."""
    return run.partition("@")[2]


def recipe_of(run: str) -> dict[str, str]:
    """The trainer options of ``run`` (``RUN`` or ``RUN@VARIANT``)."""
    variant = variant_of(run)
    if variant and variant not in VARIANTS:
        raise SystemExit(f"unknown recipe variant {variant!r}: one of {', '.join(VARIANTS)}")
    options = {**RECIPE, **VARIANTS.get(variant, {})}
    if variant in SEED_TWINS and run.partition("@")[0] == "all":  # another all-source draw, validated on the
        options["--val-groups"] = ",".join(shipped_validation_images())  # shipped model's own validation images
    return options


def shipped_validation_images() -> list[str]:
    """The validation images of the shipped ``hubmap-default`` (its card), which ``@twin`` runs validate on too:
    neither model of a two-model ensemble has trained on them."""
    card = json.loads((ROOT / "models" / "hubmap-default" / "card.json").read_text())
    return list(card["training_data"]["validation_images"])


ADAPT_TILES = 4
"""Images of the new source an ``adapt-`` run fine-tunes on (sorted by name, the first ones)."""
ADAPT_EPOCHS = "8"
"""A fine-tune's epochs (of the recipe's 1280 tiles): a third of training from scratch."""


def adapt_source(run: str) -> str | None:
    """The new source of an ``adapt-<source>[@VARIANT]`` run, else None."""
    name = run.partition("@")[0]
    return name.removeprefix("adapt-") if name.startswith("adapt-") else None


def adapt_base(run: str) -> Path:
    """The model an ``adapt-<source>[@VARIANT]`` run starts from: ``loso-<source>`` of the same variant."""
    variant = variant_of(run)
    return OUT / (f"loso-{adapt_source(run)}" + (f"@{variant}" if variant else ""))


def hubmap_pas_folds(data: Path = DATA) -> list[list[str]]:
    """Five contiguous blocks of the ``hubmap-pas`` tiles sorted by number, as ``hubmap-pas/<stem>``."""
    stems = sorted((p.stem for p in (data / "hubmap-pas" / "images").iterdir()), key=lambda s: (len(s), s))
    return [[f"hubmap-pas/{s}" for s in block] for block in np.array_split(stems, CV_FOLDS)]


def run_plan(run: str, data: Path = DATA) -> tuple[list[Path], list[str], list[str]]:
    """(training data folders, excluded groups or images, held-out image names) of one run."""
    run = run.partition("@")[0]
    if run == "all":
        return [data / s for s in SOURCES], [], []
    if run.startswith("loso-") and run[5:] in SOURCES:
        source = run[5:]
        held = [f"{source}/{p.stem}" for p in sorted((data / source / "images").iterdir())]
        return [data / s for s in SOURCES if s != source], [], held
    if run.startswith("loso-C"):
        patient = run[5:]
        held = [f"kidney-he/{p.stem}" for p in sorted((data / "kidney-he" / "images").glob(f"{patient}_*"))]
        return [data / s for s in SOURCES], [patient], held
    if run.startswith("cv-"):
        held = hubmap_pas_folds(data)[int(run[3:])]
        return [data / s for s in SOURCES], held, held
    if adapt_source(run) in SOURCES:
        source = adapt_source(run)
        held = [f"{source}/{p.stem}" for p in sorted((data / source / "images").iterdir())][ADAPT_TILES:]
        return [data / s for s in SOURCES], held, held
    raise SystemExit(f"unknown run {run!r}: loso-<source>, loso-C003, loso-C004, cv-0..cv-{CV_FOLDS - 1} or "
                     "adapt-<source>")


def mpp_table() -> dict[str, float]:
    return json.loads(MPP_FILE.read_text())


def image_mpp(name: str) -> float:
    """µm/px of one shared-data image ("<source>/<stem>"), as the trainer's ``--mpp-file`` gives it."""
    table = mpp_table()
    return table.get(name, table[name.split("/", 1)[0]])


def image_file(name: str) -> Path:
    """The file of one shared-data image ("<source>/<stem>")."""
    source, stem = name.split("/", 1)
    found = sorted((DATA / source / "images").glob(f"{stem}.*"))
    if not found:
        raise SystemExit(f"{name}: no image file under {DATA / source / 'images'}")
    return found[0]


def train_command(run: str, epochs: int | None = None, workers: int | None = None) -> list[str]:
    """The trainer command of ``run``; ``epochs`` (when given) overrides the recipe's, ``workers`` (data-loader
    processes, which change nothing the run learns) the trainer's default."""
    folders, excluded, _ = run_plan(run)
    command = [sys.executable, "-m", "napari_hubmap.cli", "train", "--out", str(OUT / run), "--name", run,
               "--mpp-file", str(MPP_FILE), "--overwrite", "--events"]
    for folder in folders:
        command += ["--data", str(folder)]
    if excluded:
        command += ["--exclude-groups", ",".join(excluded)]
    options = recipe_of(run)
    if adapt_source(run):  # a fine-tune: the base model fixes architecture and scale
        options = {k: v for k, v in options.items() if k not in ("--preset", "--target-mpp")}
        options |= {"--base": str(adapt_base(run)), "--epochs": ADAPT_EPOCHS}
    options |= {"--epochs": str(epochs)} if epochs else {}
    for option, value in options.items():
        command += [option, value] if value else [option]  # "": a flag
    return command + (["--workers", str(workers)] if workers is not None else [])


def train(runs: list[str], epochs: int | None, threads: int, workers: int | None = None) -> None:
    """Start the runs side by side (``threads`` torch threads each), wait, report their exit codes."""
    OUT.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    processes = {}
    for run in runs:
        mode = "a" if (OUT / f"{run}.checkpoint").exists() else "w"  # a resumed run's log keeps its first epochs
        with open(OUT / f"{run}.jsonl", mode) as stdout, open(OUT / f"{run}.err", mode) as stderr:
            processes[run] = subprocess.Popen(train_command(run, epochs, workers), stdout=stdout, stderr=stderr, env=env, cwd=ROOT)
    for run, process in processes.items():
        print(f"{run}: exit {process.wait()}", flush=True)


def held_out_samples(run: str, card) -> list:
    from napari_hubmap.registry.card import stain_reference_of
    from napari_hubmap.training import load_sources
    from napari_hubmap.training.standardise import standardised

    _, _, held = run_plan(run)
    if not held:  # the run ``all`` holds nothing out: its real validation images (they picked its epoch and threshold)
        held = [name for name in card.training_data.get("validation_images", []) if name.split("/", 1)[0] in SOURCES]
    source = {name.split("/", 1)[0] for name in held}
    samples = load_sources([DATA / s for s in sorted(source)], downscale=card.downscale, target_mpp=card.target_mpp,
                           mpp_overrides=mpp_table())
    wanted = set(held)
    reference = stain_reference_of(card)
    held_out = [s for s in samples if s.name in wanted]
    return held_out if reference is None else standardised(held_out, reference)  # each image as prediction moves it


def run_samples(run: str, card) -> list:
    """Every image of ``run``'s data sources at ``card``'s working scale (what it trained and validated on)."""
    from napari_hubmap.training import load_sources

    return load_sources(run_plan(run)[0], downscale=card.downscale, target_mpp=card.target_mpp, mpp_overrides=mpp_table())


def validation_samples(run: str, card, loaded: list | None = None) -> list:
    """The images that picked the epoch and threshold of ``run``'s model (its card's ``validation_images``),
    taken from ``loaded`` (:func:`run_samples`) when the caller has them already."""
    wanted = set(card.training_data.get("validation_images", []))
    samples = [s for s in (run_samples(run, card) if loaded is None else loaded) if s.name in wanted]
    if not samples:
        raise SystemExit(f"{run}: none of its validation images found")
    return samples


def image_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Kaggle's per-image Dice: 1 when both are empty."""
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2 * int((pred & truth).sum()) / total


def score_model(folder: Path | list[Path], run: str, backend: str = "torch", device: str = "cpu",
                through: str = "whole") -> dict:
    """Per-image and pooled figures of the model in ``folder`` on ``run``'s held-out images, its network run by
    ``backend`` (``torch``, ``onnx`` or ``onnx-int8``, as ``predict --backend`` runs it) on ``device`` (torch
    only; ``cuda`` predicts in float16 autocast, as training validates there). Several folders: their ensemble,
    as ``predict --model A --model B`` runs it (the members' probabilities averaged), cut at the mean of their
    cards' thresholds, objects under the first card's ``min_object_um2`` dropped; all work at one scale.
    ``through``: ``whole`` (each image in one pass, as validation in training) or ``predict`` (each image file
    through the product's tiled ``predict_slide`` at its µm/px, what a user gets: :meth:`Scorer.map_of`)."""
    folders = folder if isinstance(folder, list) else [folder]
    scorer = Scorer(folders, backend, device, through)
    samples = held_out_samples(run, scorer.card)
    out = {"run": run, "model": "+".join(str(f) for f in folders), "threshold": scorer.threshold,
           "images": len(samples), "backend": backend, "device": scorer.device.type, "through": through,
           "min_object_um2": scorer.card.min_object_um2, "outline_threshold": scorer.outline,
           "flips_threshold": scorer.flips_picks[0], "flips_outline_threshold": scorer.flips_picks[1]}
    for tta in ("plain", "flips"):
        out[tta] = held_out_figures(scorer, samples, flips=tta == "flips")
    return out


CARD_OUTLINE = "card"
"""``Scorer.objects_of(outline=CARD_OUTLINE)``: the cards' own ``outline_threshold`` (None is a value: no outline)."""


def held_out_figures(scorer: "Scorer", samples: list, flips: bool = False, threshold: float | None = None,
                     outline: float | str | None = CARD_OUTLINE) -> dict:
    """Mean per-image Dice and pooled object figures of ``scorer``'s glomeruli on ``samples`` (one pass or the flips'
    mean), at the cards' picks unless ``threshold`` / ``outline`` are given (:meth:`Scorer.objects_of`)."""
    from skimage.measure import label

    from napari_hubmap.metrics import object_scores

    dices, counts = [], np.zeros(3, int)
    for sample in samples:
        objects = scorer.objects_of(scorer.map_of(sample, flips), outline=outline, flips=flips, threshold=threshold)
        truth = sample.mask.astype(bool)
        dices.append(image_dice(objects > 0, truth))
        scores = object_scores(objects, label(truth, connectivity=2))
        counts += (scores.tp, scores.fp, scores.fn)
    return {"dice": float(np.mean(dices)), **object_figures(*(int(c) for c in counts))}


class Scorer:
    """One model (or an ensemble, probabilities averaged) with the product's default post-processing: the
    (mean) card threshold, holes filled, objects under the first card's ``min_object_um2`` dropped, outlines at
    the cards' ``outline_threshold`` (when they agree)."""

    def __init__(self, folders: list[Path], backend: str = "torch", device: str = "cpu", through: str = "whole"):
        import torch

        from napari_hubmap.inference.tta import PRESETS
        from napari_hubmap.registry import load_model
        from napari_hubmap.training.sizes import floor_px
        from napari_hubmap.training.validate import MIN_OBJECT_PX

        self.device = torch.device(device)
        self.backend, self.through = backend, through
        self.loaded = [load_model(f) for f in folders]
        """The registry models, loaded once: ``predict_slide`` takes them as they are (``through="predict"``)."""
        self.models = [_scoring_model(m, backend, self.device) for m in self.loaded]
        self.card = self.models[0].card
        if len({(m.card.target_mpp, m.card.downscale) for m in self.models}) > 1:
            raise SystemExit("an ensemble's members must work at one scale")
        mpp = self.card.target_mpp
        self.min_size = floor_px(self.card.min_object_um2, mpp, MIN_OBJECT_PX) if mpp else MIN_OBJECT_PX
        self.flips_picks = self._picks(PRESETS["flips"])
        """(threshold, outline threshold) of flip-averaged maps: the cards' ``tta_picks`` as ``predict --tta flips``
        takes them, else their one-pass picks."""
        self.threshold, self.outline = self._picks(PRESETS["none"])

    def _picks(self, tta: tuple[str, ...]) -> tuple[float, float | None]:
        """The members' mean threshold and their outline threshold (None where they differ) for ``tta``."""
        from napari_hubmap.inference.tta import card_picks

        picks = [card_picks(m.card, tta) for m in self.models]
        outlines = {outline for _, outline in picks}
        return float(np.mean([threshold for threshold, _ in picks])), (outlines.pop() if len(outlines) == 1 else None)

    def probability(self, image: np.ndarray, flips: bool = False) -> np.ndarray:
        return np.mean([_probability(m, image, flips, self.device) for m in self.models], axis=0)

    def map_of(self, sample, flips: bool = False) -> np.ndarray:
        """The probability map of one held-out ``sample`` at its working scale: the whole image in one pass, or
        (``through="predict"``) its file run through ``predict_slide`` at its µm/px (tiles, blending, tissue skip,
        the 8-bit store), cropped to the sample's shape (the engine's working grid rounds up), or resized to it
        where the engine's map stays at the slide's own, coarser grid."""
        if self.through == "whole":
            return self.probability(sample.image, flips)
        import tempfile

        from napari_hubmap.inference import predict_slide
        from napari_hubmap.inference.config import InferenceConfig
        from napari_hubmap.stores.probability import open_probability

        config = InferenceConfig(mpp=image_mpp(sample.name), tta="flips" if flips else "none", backend=self.backend,
                                 device=self.device.type)
        with tempfile.TemporaryDirectory() as tmp:
            predict_slide(image_file(sample.name), Path(tmp) / "map.prob.zarr", config, models=self.loaded)
            levels, _ = open_probability(Path(tmp) / "map.prob.zarr")
            stored = np.asarray(levels[0][:])
        h, w = sample.mask.shape
        if max(abs(stored.shape[0] - h), abs(stored.shape[1] - w)) > 1:  # a slide coarser than the working scale:
            import cv2  # its map is at the slide's own grid

            return cv2.resize(stored.astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_LINEAR)
        fitted = np.zeros((h, w), np.float32)
        fitted[: min(h, stored.shape[0]), : min(w, stored.shape[1])] = stored[:h, :w] / 255.0
        return fitted

    def objects(self, image: np.ndarray, flips: bool = False, grow: int = 0) -> np.ndarray:
        """Labelled glomeruli of ``image`` (at the model's working scale)."""
        return self.objects_of(self.probability(image, flips), grow, flips=flips)

    def objects_of(self, probability: np.ndarray, grow: int = 0, min_size: int | None = None,
                   outline: float | str | None = CARD_OUTLINE, flips: bool = False,
                   threshold: float | None = None) -> np.ndarray:
        """Labelled glomeruli of a probability map of this model, outlines grown by ``grow`` px as
        ``postprocess --grow`` grows them, objects under ``min_size`` px dropped (default: the card's), outlines
        drawn at ``outline`` (default: the card's ``outline_threshold``; None: at the threshold); a flip-averaged
        map (``flips``) at the cards' picks for it; cut at ``threshold`` (default: the cards')."""
        from napari_hubmap.postprocess import PostprocessConfig, postprocess_region

        card_threshold, card_outline = self.flips_picks if flips else (self.threshold, self.outline)
        threshold = card_threshold if threshold is None else threshold
        floor = self.min_size if min_size is None else min_size
        outline = card_outline if outline == CARD_OUTLINE else outline
        return postprocess_region(probability.astype(np.float32),
                                  PostprocessConfig(threshold=threshold, min_size=floor, grow=grow,
                                                    outline_threshold=outline))


def _scoring_model(model, backend: str, device):
    """A loaded registry model as ``backend`` runs it in one whole-image pass."""
    if backend == "torch":
        model.module.to(device)
        return model
    from napari_hubmap.inference.onnx_backend import onnx_model

    return onnx_model(model, int8=backend == "onnx-int8")


def _probability(model, image: np.ndarray, flips: bool, device) -> np.ndarray:
    from napari_hubmap.training.validate import predict_image

    if flips:
        return flip_average(model.module, image, model.card.normalization, device)
    return predict_image(model.module, image, model.card.normalization, device)


def object_figures(tp: int, fp: int, fn: int) -> dict:
    """Pooled object precision / recall / F1 and the counts they come from."""
    return {"object_precision": tp / (tp + fp) if tp + fp else 0.0, "object_recall": tp / (tp + fn) if tp + fn else 0.0,
            "object_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0, "tp": tp, "fp": fp, "fn": fn}


def flip_average(module, image: np.ndarray, normalization: dict, device) -> np.ndarray:
    """The four flips' mean probability, as ``predict --tta flips`` averages them."""
    from napari_hubmap.inference.tta import PRESETS
    from napari_hubmap.training.validate import predict_image

    return predict_image(module, image, normalization, device, PRESETS["flips"])


def score(runs: list[str], models: list[Path] | None, backend: str = "torch", device: str = "cpu",
          through: str = "whole") -> None:
    """Score each run with its own model, or with ``models`` (one folder, or several: their ensemble)."""
    import torch

    torch.set_grad_enabled(False)
    print(f"{'run':16} {'model':18} {'TTA':6} {'images':>6} {'Dice':>6} {'obj P':>6} {'obj R':>6} {'obj F1':>6}")
    for run in runs:
        folders = models or [OUT / run]
        label = "+".join(f.name for f in folders)
        result = {**score_model(folders, run, backend, device, through), "model": label}
        SCORES.mkdir(parents=True, exist_ok=True)
        name = f"{run}.{label}" + ("" if backend == "torch" else f".{backend}") + ("" if through == "whole" else f".{through}")
        # the card takes torch's one-pass figures only
        (SCORES / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        for tta in ("plain", "flips"):
            r = result[tta]
            print(f"{run:16} {label:18} {tta:6} {result['images']:6d} {r['dice']:6.3f} "
                  f"{r['object_precision']:6.3f} {r['object_recall']:6.3f} {r['object_f1']:6.3f}", flush=True)


def figures_variant(variant: str) -> str:
    """The variant whose held-out runs stand for ``variant``'s recipe: itself, or for a variant that only adds a seed
    (``stain1``, ``seed1``) the variant without it (``stain``, the recipe itself): a seed is not a recipe."""
    options = dict(VARIANTS.get(variant, {}))
    if options.pop("--seed", None) is None:
        return variant
    return next((name for name, other in VARIANTS.items() if other == options), "") if options else ""


def recipe_figures(variant: str = "") -> dict:
    """Every scored run of one recipe (``RECIPE``, or ``RECIPE`` with ``variant``), each scored with its own
    model on its own held-out images: {run: {tta: figures, "images": n}}."""
    figures = {}
    for path in sorted(SCORES.glob("*.json")):
        run, model = path.stem.split(".", 1)
        # ``all`` holds nothing out (its score is on its validation images): not a held-out figure
        # ``adapt-`` runs are fine-tunes of another run's model on part of its held-out source: not the recipe's
        if run == model and variant_of(run) == variant and run.partition("@")[0] != "all" and not adapt_source(run):
            result = json.loads(path.read_text())
            figures[run] = {"images": result["images"], "threshold": result["threshold"],
                            **{tta: result[tta] for tta in ("plain", "flips")}}
    return figures


def ship(run: str) -> Path:
    """Install ``run``'s model as models/hubmap-default, its card carrying the held-out figures of the recipe
    ``run`` was trained with (``all@colour``: the runs of ``colour``; ``all@stain1``: of ``stain``, :func:`figures_variant`)."""
    import shutil

    from napari_hubmap.atomic import atomic_path
    from napari_hubmap.defaults import DEFAULT_MODEL
    from napari_hubmap.registry import load_model, read_card
    from napari_hubmap.registry.store import CARD_FILE, WEIGHTS_FILE

    folder = OUT / run
    card = read_card(folder).replace(name=DEFAULT_MODEL)
    card.metrics["generalisation"] = {"recipe": recipe_of(run), "trained_as": run,
                                      "runs": recipe_figures(figures_variant(variant_of(run)))}
    target = ROOT / "models" / DEFAULT_MODEL
    with atomic_path(target, is_dir=True) as tmp:
        shutil.copy2(folder / WEIGHTS_FILE, tmp / WEIGHTS_FILE)
        (tmp / CARD_FILE).write_text(card.to_json(), encoding="utf-8")
        load_model(tmp)  # the weights still match the card
    return target


def record() -> Path:
    """Rewrite the shipped default's ``metrics["generalisation"]["runs"]`` from every scored run of the recipe
    it was trained with (one atomic write of its card; the weights and everything else in the card are kept)."""
    from napari_hubmap.defaults import DEFAULT_MODEL
    from napari_hubmap.registry import read_card, update_card

    folder = ROOT / "models" / DEFAULT_MODEL
    card = read_card(folder)
    shipped = card.metrics.get("generalisation", {})
    trained_as = shipped.get("trained_as", "")
    if shipped.get("recipe") != recipe_of(trained_as):
        raise SystemExit(f"{folder}: its card's recipe is not the current one of {trained_as!r}; ship a run of it instead")
    card.metrics["generalisation"] = {**shipped, "runs": recipe_figures(figures_variant(variant_of(trained_as)))}
    return update_card(folder, card)


def pooled(results: list[dict], tta: str) -> dict:
    """Several runs' figures as one: per-image Dice averaged over all their images, objects summed."""
    images = sum(r["images"] for r in results)
    counts = (sum(r[tta][k] for r in results) for k in ("tp", "fp", "fn"))
    return {"images": images, "dice": sum(r[tta]["dice"] * r["images"] for r in results) / images, **object_figures(*counts)}


def table() -> None:
    """Markdown rows of every scored (run, model), and the CV folds pooled per model."""
    results = [json.loads(p.read_text()) for p in sorted(SCORES.glob("*.json"))]
    print("| run | model | images | Dice plain / flips | object P / R (plain) | object F1 plain / flips |")
    print("|---|---|---|---|---|---|")
    groups: dict = {}
    for r in results:
        model = Path(r["model"]).name
        backend = "" if r.get("backend", "torch") == "torch" else f" ({r['backend']})"
        if r.get("through") == "predict":
            backend += " (through predict, AdaBN)" if r.get("adapt_norm") else " (through predict)"
        if r["run"].startswith("cv-"):
            groups.setdefault(_model_label(r["run"], model) + backend, []).append(r)
        _row(r["run"], model + backend, {tta: r[tta] for tta in ("plain", "flips")}, r["images"])
    for model, runs in groups.items():
        folds = ",".join(sorted(r["run"][3:] for r in runs))
        _row(f"cv {folds} pooled", model, {tta: pooled(runs, tta) for tta in ("plain", "flips")}, sum(r["images"] for r in runs))


def _model_label(run: str, model: str) -> str:
    """``recipe`` (or ``recipe@VARIANT``) for a run scored with its own model, else the model's name."""
    variant = variant_of(run)
    if model != run:
        return model
    return f"recipe@{variant}" if variant else "recipe"


def _row(run: str, model: str, figures: dict, images: int) -> None:
    p, f = figures["plain"], figures["flips"]
    print(f"| {run} | {model} | {images} | {p['dice']:.3f} / {f['dice']:.3f} | {p['object_precision']:.2f} / "
          f"{p['object_recall']:.2f} | {p['object_f1']:.3f} / {f['object_f1']:.3f} |")


def annotation_floor_um2(card, loaded: list) -> float:
    """The floor the trainer multiplies (half the 1st-percentile area of whole training glomeruli), from the
    very images ``card`` lists as trained on, among ``loaded`` (:func:`run_samples`)."""
    from napari_hubmap.training.sizes import object_floor_um2

    trained = set(card.training_data["train_images"])
    return object_floor_um2([s for s in loaded if s.name in trained], card.target_mpp)


def set_floor(run: str, folder: Path | None = None) -> dict:
    """Pick the card's ``min_object_um2`` as the trainer now does, for a model trained before it did: the
    multiple of its training glomeruli's floor (the very images its card lists as trained on, synthetic ones
    left out) with the best object F1 on its own *validation* images, at the card's threshold."""
    import torch

    from napari_hubmap.registry import load_model, update_card
    from napari_hubmap.training.sizes import floor_choices_px
    from napari_hubmap.training.validate import MIN_OBJECT_PX, validation_scores

    folder = folder or OUT / run
    model = load_model(folder)
    card = model.card
    samples = run_samples(run, card)
    choices = floor_choices_px(annotation_floor_um2(card, samples), card.target_mpp, MIN_OBJECT_PX)
    with torch.inference_mode():
        scores = validation_scores(model.module, validation_samples(run, card, samples), card.normalization,
                                   torch.device("cpu"), [card.threshold], min_sizes=tuple(choices))
    picked = {"from": card.min_object_um2, "to": choices[scores["min_size_px"]], "choices_um2": sorted(choices.values()),
              "validation_object_f1": scores["object_f1"], "images": scores["images"]}
    metrics = {**card.metrics, "floor": picked}
    update_card(folder, card.replace(min_object_um2=picked["to"], metrics=metrics))
    return picked


def set_outline(run: str, folder: Path | None = None) -> dict:
    """Pick the card's ``outline_threshold`` as the trainer now does, for a model trained before it did: the choice
    (``validate.OUTLINE_CHOICES``) whose objects, at the card's threshold and floor, have the best per-source Dice on
    the run's own *validation* images."""
    from napari_hubmap.registry import update_card
    from napari_hubmap.training.validate import best_outline

    folder = folder or OUT / run
    scorer = Scorer([folder])
    card = scorer.card
    samples = validation_samples(run, card)
    outline, dice = best_outline(samples, [scorer.probability(s.image) for s in samples], scorer.threshold,
                                 scorer.min_size)
    picked = {"from": card.outline_threshold, "to": outline, "validation_dice": dice, "images": len(samples)}
    metrics = {**card.metrics, "outline": picked}
    update_card(folder, card.replace(outline_threshold=outline, metrics=metrics))
    return picked


def set_tta_picks(run: str, folder: Path | None = None) -> dict:
    """Pick the card's ``tta_picks`` as the trainer now does at the end of a run, for a model trained before it did:
    each preset's threshold and outline threshold on its averaged predictions of the run's own *validation* images,
    objects under the card's floor dropped."""
    from napari_hubmap.registry import update_card
    from napari_hubmap.training import TrainConfig
    from napari_hubmap.training.validate import tta_picks

    folder = folder or OUT / run
    scorer = Scorer([folder])
    model = scorer.models[0]
    samples = validation_samples(run, scorer.card)
    picks = tta_picks(model.module, samples, scorer.card.normalization, scorer.device, TrainConfig().thresholds,
                      scorer.min_size)
    update_card(folder, scorer.card.replace(tta_picks=picks))
    return picks


def rethreshold(run: str, folder: Path | None = None) -> dict:
    """Pick the card's threshold again on the run's own *validation* images (never its held-out ones) over
    the trainer's current grid (runs trained before it reached 0.95 stopped at 0.8, their best)."""
    import torch

    from napari_hubmap.registry import load_model, update_card
    from napari_hubmap.training import TrainConfig
    from napari_hubmap.training.validate import validation_scores

    folder = folder or OUT / run
    model = load_model(folder)
    card = model.card
    samples = validation_samples(run, card)
    with torch.inference_mode():
        scores = validation_scores(model.module, samples, card.normalization, torch.device("cpu"), TrainConfig().thresholds)
    metrics = {**card.metrics, "rethreshold": {"from": card.threshold, "to": scores["threshold"],
                                               "validation_dice": scores["dice"], "validation_object_f1": scores["object_f1"],
                                               "images": len(samples)}}
    update_card(folder, card.replace(threshold=float(scores["threshold"]), metrics=metrics))
    return metrics["rethreshold"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["train", "score", "ship", "record", "floor", "outline", "tta",
                                           "rethreshold", "table"])
    parser.add_argument("runs", nargs="*")
    parser.add_argument("--epochs", type=int, help="train: override the recipe's epochs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, help="train: data-loader processes per run (the trainer's default: 1)")
    parser.add_argument("--device", default="cpu", help="score: where the network runs (cpu, cuda)")
    parser.add_argument("--model", type=Path, action="append",
                        help="score: this model folder instead of each run's own; repeat to score their ensemble")
    from napari_hubmap.inference.config import BACKENDS

    parser.add_argument("--backend", choices=[b for b in BACKENDS if b != "auto"], default="torch",
                        help="score: what runs the network (the card's figures are torch's)")
    parser.add_argument("--through", choices=["whole", "predict"], default="whole",
                        help="score: each image in one pass (whole), or its file through predict_slide (predict)")
    args = parser.parse_args()
    if args.action in ("floor", "outline", "tta", "rethreshold") and args.model and len(args.model) > 1:
        raise SystemExit(f"{args.action} takes one --model folder")
    one_model = args.model[0] if args.model else None
    OUT.mkdir(parents=True, exist_ok=True)
    if args.action == "train":
        train(args.runs, args.epochs, args.threads, args.workers)
    elif args.action == "score":
        score(args.runs, args.model, args.backend, args.device, args.through)
    elif args.action == "table":
        table()
    elif args.action == "record":
        print(f"recorded in {record()}")
    elif args.action == "rethreshold":
        for run in args.runs:
            print(f"{run}: {json.dumps(rethreshold(run, one_model))}")
    elif args.action == "floor":
        for run in args.runs:
            print(f"{run}: min_object_um2 {json.dumps(set_floor(run, one_model))}")
    elif args.action == "outline":
        for run in args.runs:
            print(f"{run}: outline_threshold {json.dumps(set_outline(run, one_model))}")
    elif args.action == "tta":
        for run in args.runs:
            print(f"{run}: tta_picks {json.dumps(set_tta_picks(run, one_model))}")
    else:
        print(f"installed {ship(args.runs[0])}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

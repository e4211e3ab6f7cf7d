"""The product's loop once on real slides: a curation project of ``hubmap-pas`` with cross-validated maps.

Each ``hubmap-pas`` tile is predicted by the cross-validation model that never saw it
(``bench-out/generalisation/cv-<k>``, see ``generalisation.py``), through ``napari-hubmap predict`` at
its true 1 µm/px; the tiles, their LabelMe ground truth and those maps make one curation project
(``napari-hubmap project init``), whose review queue ranks the tiles where ground truth and prediction
disagree most. Only the folds whose model exists take part.

    python benchmarks/curation_round.py predict            # maps of every fold with a model
    python benchmarks/curation_round.py project            # bench-out/curation/project from them
    python benchmarks/curation_round.py queue [--top 20]   # the most suspicious review tiles, one JSON line each
    python benchmarks/curation_round.py retrain [--before]  # the recipe's cv-0 run, hubmap-pas from the project
    python benchmarks/curation_round.py score              # before and after, on cv-0's held-out tiles

The review itself happens in the Review panel (``napari-hubmap view`` and *Open* the project folder),
or with ``napari-hubmap project review``. After it, ``retrain`` trains run ``cv-0`` of the recipe again
with ``hubmap-pas`` taken from the reviewed project (dropped tiles left out, accepted predictions and
corrections used), fold 0's tiles still held out; ``retrain --before`` does the same from an unreviewed
copy of the project; ``score`` compares them (and run ``cv-0``, trained on whole images) on fold 0's
original LabelMe ground truth.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from generalisation import DATA, MPP_FILE, OUT as MODELS, SOURCES, hubmap_pas_folds, recipe_of, score_model

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench-out" / "curation"
MAPS = OUT / "predictions"
PROJECT = OUT / "project"
TILE_MPP = "1.0"
REVIEW_TILE = "256"
"""Review tiles at the working scale (3 µm/px): six to a 1600 x 1200 image."""
CURATED = OUT / "cv-0-curated"
"""Run cv-0 of the recipe trained on the reviewed project instead of the raw hubmap-pas ground truth."""
RAW = OUT / "cv-0-raw-project"
"""The same from a copy of the project with every review undone: the ground truth as imported. Training
from review tiles differs from training from whole images, so this, not run cv-0, is the "before"."""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "napari_hubmap.cli", *args]


def tile_image(name: str) -> Path:
    return DATA / "hubmap-pas" / "images" / f"{name.split('/', 1)[1]}.jpg"


def folds_with_models() -> list[tuple[int, list[str]]]:
    return [(k, names) for k, names in enumerate(hubmap_pas_folds()) if (MODELS / f"cv-{k}" / "card.json").is_file()]


def predict() -> None:
    """Each fold's tiles by the model that held them out."""
    for k, names in folds_with_models():
        slides = [str(tile_image(name)) for name in names]
        subprocess.run(cli("predict", *slides, "--model", str(MODELS / f"cv-{k}"), "--out", str(MAPS),
                           "--mpp", TILE_MPP), check=True, cwd=ROOT)


def project() -> None:
    """One project: every predicted tile with its ground truth and its map."""
    args = ["project", "init", str(PROJECT), "--mpp", TILE_MPP, "--tile", REVIEW_TILE]
    for _, names in folds_with_models():
        for name in names:
            image = tile_image(name)
            annotation = DATA / "hubmap-pas" / "annotations" / f"{image.stem}.json"
            args += ["--slide", str(image), "--ground-truth", f"{image}={annotation}",
                     "--prediction", f"{image}={MAPS / (image.stem + '.prob.zarr')}"]
    subprocess.run(cli(*args), check=True, cwd=ROOT)


def queue(top: int) -> None:
    subprocess.run(cli("project", "queue", str(PROJECT), "--top", str(top)), check=True, cwd=ROOT)


def fold_zero_slides() -> list[str]:
    """The project's slide ids of fold 0's tiles (held out of the retraining as of run cv-0)."""
    from napari_hubmap.project import open_project

    stems = {name.split("/", 1)[1] for name in hubmap_pas_folds()[0]}
    return [entry.id for entry in open_project(PROJECT).slides if Path(entry.path).stem in stems]


def unreviewed_copy() -> Path:
    """A copy of the project with every tile's review state back to unreviewed."""
    import shutil

    from napari_hubmap.project import open_project, review_queue, set_state

    copy = OUT / "project-unreviewed"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(PROJECT, copy)
    project = open_project(copy)
    for entry in review_queue(project, include_reviewed=True):
        if entry.state != "unreviewed":
            set_state(project, entry.slide, entry.tile, "unreviewed")
    return copy


def retrain(epochs: int, before: bool) -> None:
    """Run cv-0 of the recipe from the reviewed project (or, ``before``, from an unreviewed copy)."""
    project, out = (unreviewed_copy(), RAW) if before else (PROJECT, CURATED)
    command = cli("train", "--out", str(out), "--name", out.name, "--epochs", str(epochs),
                  "--mpp-file", str(MPP_FILE), "--overwrite", "--exclude-groups", ",".join(fold_zero_slides()))
    for folder in [DATA / s for s in SOURCES if s != "hubmap-pas"] + [project]:
        command += ["--data", str(folder)]
    for option, value in recipe_of("cv-0").items():
        command += [option, value]
    with open(OUT / f"{out.name}.jsonl", "w") as log:
        subprocess.run(command + ["--events"], check=True, cwd=ROOT, stdout=log)


def score() -> None:
    import json

    import torch

    torch.set_grad_enabled(False)
    for folder in (MODELS / "cv-0", RAW, CURATED):
        result = score_model(folder, "cv-0")
        (OUT / f"score.{folder.name}.json").write_text(json.dumps(result, indent=1))
        for tta in ("plain", "flips"):
            r = result[tta]
            print(f"{folder.name:14} {tta:6} Dice {r['dice']:.3f} P {r['object_precision']:.3f} "
                  f"R {r['object_recall']:.3f} F1 {r['object_f1']:.3f} (tp {r['tp']} fp {r['fp']} fn {r['fn']})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["predict", "project", "queue", "retrain", "score"])
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--before", action="store_true", help="retrain: from an unreviewed copy of the project")
    args = parser.parse_args()
    if args.action == "predict":
        predict()
    elif args.action == "project":
        project()
    elif args.action == "queue":
        queue(args.top)
    elif args.action == "retrain":
        retrain(args.epochs, args.before)
    else:
        score()


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as failed:  # the command printed its own one-line error
        sys.exit(f"curation_round: napari-hubmap {' '.join(failed.cmd[3:5])} failed (exit {failed.returncode})")

"""The product's loop once on real slides: a curation project of ``hubmap-pas`` with cross-validated maps.

Each ``hubmap-pas`` tile is predicted by the cross-validation model that never saw it
(``bench-out/generalisation/cv-<k>``, see ``generalisation.py``), through ``napari-hubmap predict`` at
its true 1 µm/px; the tiles, their LabelMe ground truth and those maps make one curation project
(``napari-hubmap project init``), whose review queue ranks the tiles where ground truth and prediction
disagree most. Only the folds whose model exists take part.

    python benchmarks/curation_round.py predict            # maps of every fold with a model
    python benchmarks/curation_round.py project            # bench-out/curation/project from them
    python benchmarks/curation_round.py queue [--top 20]   # the most suspicious review tiles, one JSON line each

The review itself happens in the Review panel (``napari-hubmap view`` and *Open* the project folder),
or with ``napari-hubmap project review``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from generalisation import DATA, OUT as MODELS, hubmap_pas_folds

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench-out" / "curation"
MAPS = OUT / "predictions"
PROJECT = OUT / "project"
TILE_MPP = "1.0"
REVIEW_TILE = "256"
"""Review tiles at the working scale (3 µm/px): six to a 1600 x 1200 image."""


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["predict", "project", "queue"])
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    if args.action == "predict":
        predict()
    elif args.action == "project":
        project()
    else:
        queue(args.top)


if __name__ == "__main__":
    main()

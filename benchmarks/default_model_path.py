"""The shipped default model through the product's own path, on real HuBMAP PAS tiles.

For each tile: ``predict_slide`` (the JPEG at its 1 µm/px, the card's working scale, tile and threshold,
torch backend, no TTA) -> ``postprocess_slide`` (the card's defaults) -> ``evaluate`` of the labels
store against the tile's LabelMe polygons, exactly as ``napari-hubmap predict``, ``postprocess`` and
``evaluate`` do. Writes ``benchmarks/default-model-path.json`` (per tile: Dice, objects found, true,
matched), which ``tests/test_default_model.py`` takes its expected values from (with a margin): the
test runs the same path on two of these tiles and must land near what this benchmark measured.

These are training tiles of the shipped model (it trained on every source): this checks that the
weights and the whole path work together, not how the model generalises (``generalisation.py``).

    python benchmarks/default_model_path.py [--tiles 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_HUBMAP_DATA", ROOT.parent / "shared" / "data")) / "hubmap-pas"
RESULT = ROOT / "benchmarks" / "default-model-path.json"
TILE_MPP = 1.0  # hubmap-pas tiles: HuBMAP's 0.5 µm/px scans, 2x down (benchmarks/shared-data-mpp.json)


def run_path(image: Path, annotation: Path, model: Path, work: Path) -> dict:
    """predict -> postprocess -> evaluate, as the CLI chains them; the evaluation's scores."""
    import numpy as np

    from napari_hubmap.inference import InferenceConfig, predict_slide
    from napari_hubmap.metrics import evaluate
    from napari_hubmap.postprocess import postprocess_slide
    from napari_hubmap.postprocess.inputs import load_ground_truth, load_prediction

    prob, labels = work / f"{image.stem}.prob.zarr", work / f"{image.stem}.labels.zarr"
    predict_slide(image, prob, InferenceConfig(models=[str(model)], mpp=TILE_MPP, backend="torch"))
    postprocess_slide(prob, labels)
    prediction = load_prediction(labels)
    truth = load_ground_truth(annotation, prediction)
    return evaluate(np.asarray(prediction.array), truth, kind="labels")


def tiles(count: int) -> list[tuple[Path, Path]]:
    """The first ``count`` tiles (by name) with at least two annotated glomeruli."""
    chosen = []
    for annotation in sorted((DATA / "annotations").glob("*.json")):
        shapes = json.loads(annotation.read_text())["shapes"]
        image = DATA / "images" / f"{annotation.stem}.jpg"
        if len(shapes) >= 2 and image.exists():
            chosen.append((image, annotation))
        if len(chosen) == count:
            break
    return chosen


def main(argv: list[str] | None = None) -> int:
    from napari_hubmap.defaults import DEFAULT_MODEL
    from napari_hubmap.registry.store import repository_models_folder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=10)
    args = parser.parse_args(argv)
    model = repository_models_folder() / DEFAULT_MODEL
    rows = {}
    with tempfile.TemporaryDirectory() as work:
        for image, annotation in tiles(args.tiles):
            start = time.monotonic()
            scores = run_path(image, annotation, model, Path(work))
            rows[image.name] = {"dice": round(scores["dice"], 4), "found": scores["pred_count"],
                                "true": scores["gt_count"], "matched": scores["tp"],
                                "seconds": round(time.monotonic() - start, 2)}
            print(json.dumps({"tile": image.name, **rows[image.name]}), flush=True)
    sha = json.loads((model / "card.json").read_text())["weights_sha256"]
    RESULT.write_text(json.dumps({"model": DEFAULT_MODEL, "weights_sha256": sha, "mpp": TILE_MPP, "tiles": rows},
                                 indent=1) + "\n")
    print(f"wrote {RESULT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

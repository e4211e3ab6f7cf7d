"""Validation figures of the default model's recipe: patient-wise folds and held-back PAS tiles.

``benchmarks/train_default_model.sh`` trains the recipe twice with the same settings: fold A trains on
patient C003 and validates on C004 (it is the shipped model), fold B the reverse; both hold back the
same four PAS tiles (10025, 10102, 10149, 10165). This script reloads each fold's registered weights and
scores its validation images again (not trusting the numbers in the card): pooled Dice at the card's
threshold and object F1 (IoU >= 0.5), per source, on whole images at the card's working scale (3 µm/px;
each image's µm/px as the card's training data records it), with and without flip TTA.

    python benchmarks/eval_default_model.py [--models bench-out/models] [--data ../shared/data]
                                            [--ship bench-out/models/fold-A]

Prints a table and writes bench-out/eval_default_model.json. ``--ship FOLDER`` also installs that model
as models/hubmap-default (one atomic folder swap), with both folds' figures added to its card as
``metrics["cross_validation"]``: how the recipe does on an H&E patient it never saw.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


class FlipAverage(torch.nn.Module):
    """Mean logit over identity, horizontal, vertical and both flips (what --tta flips does)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        outs = [torch.flip(self.module(torch.flip(x, d)), d) if d else self.module(x) for d in ([], [-1], [-2], [-2, -1])]
        return torch.stack(outs).mean(0)


def score_fold(folder: Path, data: Path) -> dict:
    from napari_hubmap.registry import load_model
    from napari_hubmap.training import load_sources
    from napari_hubmap.training.validate import validation_scores

    model = load_model(folder)
    card = model.card
    wanted = set(card.training_data["validation_images"])
    samples = [s for s in load_sources([data], downscale=card.downscale, target_mpp=card.target_mpp,
                                       mpp_overrides=card.training_data["mpp"]) if s.name in wanted]
    out = {"model": str(folder), "threshold": card.threshold, "epoch": card.training_data.get("epoch"),
           "validation_images": sorted(wanted)}
    for name, module in (("plain", model.module), ("flips", FlipAverage(model.module))):
        scores = validation_scores(module, samples, card.normalization, torch.device("cpu"), [card.threshold])
        out[name] = {"all": {k: scores[k] for k in ("dice", "object_f1", "object_precision", "object_recall")},
                     **scores["by_source"]}
    return out


def ship(folder: Path, results: dict) -> Path:
    """Install ``folder`` as models/hubmap-default, its card carrying the folds' figures."""
    import shutil

    from napari_hubmap.atomic import atomic_path
    from napari_hubmap.registry import load_model, read_card
    from napari_hubmap.registry.store import CARD_FILE, WEIGHTS_FILE

    card = read_card(folder)
    card.metrics["cross_validation"] = {
        f"fold {fold} (validated on {'C004' if fold == 'A' else 'C003'})": {
            tta: {source: {k: r[tta][source][k] for k in ("dice", "object_f1", "images")}
                  for source in ("kidney-he", "pas-tiles")}
            for tta in ("plain", "flips")}
        for fold, r in results.items()}
    target = ROOT / "models" / card.name
    with atomic_path(target, is_dir=True) as tmp:
        shutil.copy2(folder / WEIGHTS_FILE, tmp / WEIGHTS_FILE)
        (tmp / CARD_FILE).write_text(card.to_json(), encoding="utf-8")
        load_model(tmp)  # the weights still match the card
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "bench-out" / "models")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--ship", type=Path, help="model folder to install as models/hubmap-default")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    results = {fold: score_fold(args.models / f"fold-{fold}", args.data) for fold in ("A", "B")}
    print(f"{'fold':5} {'validated on':22} {'TTA':6} {'Dice':>6} {'obj F1':>7} {'images':>6}")
    for fold, r in results.items():
        patient = "C004" if fold == "A" else "C003"
        for tta in ("plain", "flips"):
            for source, label in (("kidney-he", f"H&E {patient}"), ("pas-tiles", "PAS held-back")):
                s = r[tta][source]
                print(f"{fold:5} {label:22} {tta:6} {s['dice']:6.3f} {s['object_f1']:7.3f} {s['images']:6d}")
    (ROOT / "bench-out").mkdir(exist_ok=True)
    (ROOT / "bench-out" / "eval_default_model.json").write_text(json.dumps(results, indent=1, default=float))
    if args.ship:
        print(f"installed {ship(args.ship, results)}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

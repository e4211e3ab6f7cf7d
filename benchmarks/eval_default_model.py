"""Validation figures of the default model's recipe: patient-wise folds and held-back PAS tiles.

The default model is trained by ``benchmarks/train_default_model.sh`` twice with the same settings:
fold A trains on patient C003 and validates on C004, fold B the reverse; both hold back the same four
PAS tiles (10025, 10102, 10149, 10165). This script reloads each fold's registered weights and scores
its validation images again (not trusting the numbers in the card): pooled Dice at the card's
threshold and object F1 (IoU >= 0.5), per source, on whole images at the card's working scale (3 µm/px),
with and without flip TTA.

    python benchmarks/eval_default_model.py [--models bench-out/models] [--data ../shared/data]

Prints a table and writes bench-out/eval_default_model.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MPP = {"kidney-he": 0.94, "pas-tiles": 0.5, "hubmap-16x": 8.0}


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
                                       mpp_overrides=MPP) if s.name in wanted]
    out = {"model": str(folder), "threshold": card.threshold, "epoch": card.training_data.get("epoch"),
           "validation_images": sorted(wanted)}
    for name, module in (("plain", model.module), ("flips", FlipAverage(model.module))):
        scores = validation_scores(module, samples, card.normalization, torch.device("cpu"), [card.threshold])
        out[name] = {"all": {k: scores[k] for k in ("dice", "object_f1", "object_precision", "object_recall")},
                     **scores["by_source"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "bench-out" / "models")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
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


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

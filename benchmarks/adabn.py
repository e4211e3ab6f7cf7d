"""AdaBN measured on the shipped default's validation images: why the product does not adapt batch norm per slide.

AdaBN (Li et al. 2016) measures a network's batch-norm running statistics again on the target images before
predicting. Session 26 built it into the engine (``predict --adapt-norm``, commit 8a1751d: up to 32 tissue tiles per
slide, every layer or only the encoder's layers at most S times coarser than the tile) and scored the shipped model's
31 validation images through ``predict``; by the rule written before (``models/README.md``) it was taken out again.
This script repeats the measurement in one whole-image pass per image, the three ways that tell the causes apart:

- ``original``: the card's statistics (what ships);
- ``per-image``: each image's own statistics (every layer, and the encoder's layers up to stride 4), the threshold
  swept, so a shifted calibration cannot hide a better map;
- ``pooled``: statistics of random 160 px crops of all 31 images, 16 a batch as the trainer draws them (the same
  images' population, no single image's content).

    python benchmarks/adabn.py        # about 6 minutes on one thread here

Session 26, CPU (mean per-image Dice; the card's threshold is 0.8):

| statistics | 0.3 | 0.4 | 0.5 | 0.6 | 0.7 | 0.8 | 0.9 | 0.95 |
|---|---|---|---|---|---|---|---|---|
| original | 0.810 | 0.813 | 0.815 | 0.815 | 0.817 | 0.818 | 0.823 | 0.787 |
| per-image, every layer | 0.503 | 0.509 | 0.511 | 0.511 | 0.510 | 0.510 | 0.519 | 0.511 |
| per-image, stride <= 4 | 0.644 | 0.643 | 0.640 | 0.643 | 0.627 | 0.627 | 0.607 | 0.604 |
| pooled crops, every layer | 0.761 | 0.766 | 0.770 | 0.771 | 0.771 | 0.752 | 0.789 | 0.787 |
| pooled crops, stride <= 4 | 0.809 | 0.812 | 0.796 | 0.797 | 0.797 | 0.798 | 0.808 | 0.803 |
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generalisation as g  # noqa: E402

GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def norm_layers(module: nn.Module) -> list:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def adapted(module: nn.Module, batches: list[torch.Tensor], max_stride: int | None = None) -> nn.Module:
    """A copy of ``module`` whose batch-norm statistics (every layer, or the encoder's whose input is at most
    ``max_stride`` times coarser than the batches) are the mean of ``batches``' own."""
    copied = copy.deepcopy(module).eval()
    layers = norm_layers(copied) if max_stride is None else _shallow_layers(copied, batches[0], max_stride)
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    for batch in batches:
        copied(batch)
    return copied.eval()


def _shallow_layers(module: nn.Module, example: torch.Tensor, max_stride: int) -> list:
    """The encoder's batch-norm layers whose input is at most ``max_stride`` times coarser than ``example`` (one
    forward pass of its first tile measures them; layers the forward never calls are left out)."""
    sizes = {}

    def record(layer, args) -> None:  # returns nothing: a pre-hook's return value would replace the input
        sizes.setdefault(id(layer), args[0].shape[-1])

    hooks = [layer.register_forward_pre_hook(record) for layer in norm_layers(module)]
    try:
        module(example[:1])
    finally:
        for hook in hooks:
            hook.remove()
    width = example.shape[-1]
    return [layer for layer in norm_layers(getattr(module, "encoder", module))
            if sizes.get(id(layer), 0) * max_stride >= width]


def mean_dice(scorer, samples, maps, threshold: float) -> float:
    return float(np.mean([g.image_dice(scorer.objects_of(m, threshold=threshold) > 0, s.mask.astype(bool))
                          for m, s in zip(maps, samples)]))


def main() -> None:
    from napari_hubmap.inference.normalisation import normalise

    torch.set_grad_enabled(False)
    scorer = g.Scorer([g.ROOT / "models" / "hubmap-default"])
    samples = g.held_out_samples("all", scorer.card)
    original = scorer.models[0].module
    normalisation = scorer.card.normalization

    def maps_with(module_of) -> list:
        out = []
        for sample in samples:
            scorer.models[0].module = module_of(sample)
            out.append(scorer.probability(sample.image))
        scorer.models[0].module = original
        return out

    def one_image(sample) -> list[torch.Tensor]:
        return [torch.from_numpy(normalise(sample.image[None], normalisation))]

    rng = np.random.default_rng(0)
    usable = [s.image for s in samples if min(s.image.shape[:2]) >= 160]
    crops = []
    for _ in range(20):
        picks = [usable[i] for i in rng.integers(len(usable), size=16)]
        tiles = []
        for image in picks:
            y, x = rng.integers(0, image.shape[0] - 159), rng.integers(0, image.shape[1] - 159)
            tiles.append(image[y : y + 160, x : x + 160])
        crops.append(torch.from_numpy(normalise(np.stack(tiles), normalisation)))
    ways = {
        "original": lambda s: original,
        "per-image, every layer": lambda s: adapted(original, one_image(s)),
        "per-image, stride <= 4": lambda s: adapted(original, one_image(s), 4),
    }
    pooled_all, pooled_4 = adapted(original, crops), adapted(original, crops, 4)
    ways |= {"pooled crops, every layer": lambda s: pooled_all, "pooled crops, stride <= 4": lambda s: pooled_4}
    print("way".ljust(28) + "".join(f"{t:>7}" for t in GRID))
    for name, module_of in ways.items():
        maps = maps_with(module_of)
        print(name.ljust(28) + "".join(f"{mean_dice(scorer, samples, maps, t):7.3f}" for t in GRID), flush=True)


if __name__ == "__main__":
    main()

"""Whole-image validation: Dice and object F1 (IoU >= 0.5), threshold chosen.

``dice`` is the mean over sources (data folders) of each source's Dice pooled over its pixels, so a
source of large images does not decide alone which epoch and threshold win; ``dice_pooled`` pools
every validation pixel.

Each validation image is predicted whole (reflect-padded to a multiple of 32) with the weights being
validated (the EMA copy during training). The threshold that maximises ``dice`` over
``thresholds`` is what the model card records; object F1 is computed at that threshold on connected
components (holes filled, objects under the smallest size of ``min_sizes`` dropped, by default
``MIN_OBJECT_PX``), against the mask's components. With several ``min_sizes`` the one with the best pooled
object F1 is picked (ties: the smaller) and the object figures are those at it (``min_size_px``).
Last the outline threshold (:data:`OUTLINE_CHOICES`, post-processing's hysteresis) is picked on the objects at that
threshold and floor, by the same per-source ``dice`` (ties: the earlier choice, so no spread first):
``outline_threshold`` (None: none) and ``outline_dice``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .sampling import to_tensor
from .sources import Sample

MIN_OBJECT_PX = 16
"""At the working scale (2 µm/px: a 8 µm disc); smaller predicted specks are not glomeruli."""
OUTLINE_CHOICES = (1.0, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
"""Outline thresholds tried on the validation images (1: outlines at the card threshold). The recipe's models pick
thresholds of 0.8-0.95, which keep false glomeruli out but trim the found ones to their tuft. Picked this way for nine
held-out runs of ``benchmarks/generalisation.py``, held-out Dice rose on six (by 0.008-0.134) and was unchanged on three
(none picked); object F1 likewise (``benchmarks/outline-scores/``, ``models/README.md``)."""


@torch.inference_mode()
def predict_image(module: torch.nn.Module, image: np.ndarray, normalization: dict, device,
                  tta: tuple[str, ...] = ("identity",)) -> np.ndarray:
    """Foreground probability (H, W) float32 of one whole image, averaged over the test-time transforms ``tta``
    (:data:`napari_hubmap.inference.tta.DIHEDRAL` names, each inverted exactly, as the engine does per tile)."""
    from ..inference.tta import apply, invert

    x = to_tensor(image, normalization)[None].to(device)
    h, w = x.shape[-2:]
    ph, pw = (-h) % 32, (-w) % 32
    mode = "reflect" if h > ph and w > pw else "replicate"
    x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode=mode)
    total = None
    for name in tta:
        with torch.autocast(device_type=device.type, enabled=device.type == "cuda"):
            logits = module(apply(name, x))
        prob = torch.sigmoid(invert(name, logits).float())
        total = prob if total is None else total + prob
    prob = (total / len(tta))[0, 0, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]
    return prob.cpu().numpy()


TTA_PICKED = ("flips", "d4")
"""The test-time augmentation presets whose threshold and outline threshold the trainer picks (``ModelCard.tta_picks``)."""


def tta_picks(module, samples: list[Sample], normalization: dict, device, thresholds, min_size: int) -> dict:
    """{preset: {"threshold", "outline_threshold"}} of :data:`TTA_PICKED`, each picked on the averaged predictions of
    ``samples`` as :func:`validation_scores` picks them on one pass (objects under ``min_size`` px dropped); {}
    without samples."""
    from ..inference.tta import PRESETS

    if not samples:
        return {}
    module.eval()
    picks = {}
    for preset in TTA_PICKED:
        probs = [predict_image(module, s.image, normalization, device, PRESETS[preset]) for s in samples]
        scores = probability_scores(samples, probs, thresholds, (min_size,))
        picks[preset] = {"threshold": scores["threshold"], "outline_threshold": scores["outline_threshold"]}
    return picks


def _objects(mask: np.ndarray) -> np.ndarray:
    from ..postprocess import PostprocessConfig, postprocess_region

    return postprocess_region(mask.astype(np.float32), PostprocessConfig(threshold=0.5, min_size=MIN_OBJECT_PX))


def validation_scores(module, samples: list[Sample], normalization: dict, device, thresholds,
                      min_sizes=(MIN_OBJECT_PX,)) -> dict:
    """Pooled Dice at the best threshold, per-source Dice, object precision/recall/F1 at the best of
    ``min_sizes`` (px); {} without samples."""

    if not samples:
        return {}
    was_training = module.training
    module.eval()
    probs = [predict_image(module, s.image, normalization, device) for s in samples]
    module.train(was_training)
    return probability_scores(samples, probs, thresholds, min_sizes)


def probability_scores(samples: list[Sample], probs: list[np.ndarray], thresholds,
                       min_sizes=(MIN_OBJECT_PX,)) -> dict:
    """:func:`validation_scores` of given probability maps (one per sample, e.g. a test-time augmentation's)."""
    thresholds = sorted(float(t) for t in thresholds)
    sources = sorted({s.source for s in samples})
    inter, total = _overlaps(samples, sources, ([p >= t for t in thresholds] for p in probs), len(thresholds))
    source_dice = (2 * inter + 1e-9) / (total + 1e-9)
    balanced = balanced_dice(source_dice, [sources.index(s.source) for s in samples if s.mask.any()])
    pooled = (2 * inter.sum(0) + 1e-9) / (total.sum(0) + 1e-9)
    best = int(np.argmax(balanced))
    threshold = thresholds[best]
    min_size, per_source = _best_floor(samples, [_objects(p >= threshold) for p in probs], min_sizes)
    tp, fp, fn = _pooled(per_source)
    outline, outline_dice = best_outline(samples, probs, threshold, min_size)
    return {
        "outline_threshold": outline,
        "outline_dice": outline_dice,
        "dice": float(balanced[best]),
        "dice_pooled": float(pooled[best]),
        "threshold": threshold,
        "min_size_px": min_size,
        "object_f1": _f1(tp, fp, fn),
        "object_precision": tp / (tp + fp) if tp + fp else 0.0,
        "object_recall": tp / (tp + fn) if tp + fn else 0.0,
        "objects": {"tp": tp, "fp": fp, "fn": fn},
        "images": len(samples),
        "by_source": {k: {"dice": float(source_dice[sources.index(k), best]), "object_f1": _f1(*v[:3]),
                          "images": v[3]} for k, v in sorted(per_source.items())},
    }


def _best_floor(samples: list[Sample], objects: list[np.ndarray], min_sizes) -> tuple[int, dict]:
    """The size floor (px) of ``min_sizes`` with the best pooled object F1 (ties: the smaller) and its
    object counts per source ({source: [tp, fp, fn, images]}); ``objects``: labels at the smallest floor."""
    from skimage.measure import label

    from ..metrics import object_scores
    from ..postprocess.pieces import drop_small

    truths = [label(s.mask, connectivity=2) for s in samples]
    counted = {}
    for floor in sorted(set(int(m) for m in min_sizes)):
        per_source: dict = {}
        for s, o, truth in zip(samples, objects, truths):
            scores = object_scores(drop_small(o, floor)[0], truth)
            acc = per_source.setdefault(s.source, [0, 0, 0, 0])
            acc[:] = [acc[0] + scores.tp, acc[1] + scores.fp, acc[2] + scores.fn, acc[3] + 1]
        counted[floor] = per_source
    floor = max(counted, key=lambda f: (_f1(*_pooled(counted[f])), -f))
    return floor, counted[floor]


def best_outline(samples: list[Sample], probs: list[np.ndarray], threshold: float, min_size: int,
                 choices=OUTLINE_CHOICES) -> tuple[float | None, float]:
    """The outline threshold of ``choices`` (at or above ``threshold``: none) whose objects (post-processing at
    ``threshold`` and ``min_size``) have the best per-source Dice (:func:`balanced_dice`; ties: the earlier), and
    that Dice."""
    from ..postprocess import PostprocessConfig, postprocess_region

    sources = sorted({s.source for s in samples})
    outlines = [o if o < threshold else None for o in choices]
    found = ([postprocess_region(p, PostprocessConfig(threshold=threshold, min_size=min_size, outline_threshold=o)) > 0
              for o in outlines] for p in probs)
    inter, total = _overlaps(samples, sources, found, len(outlines))
    dice = balanced_dice((2 * inter + 1e-9) / (total + 1e-9), [sources.index(s.source) for s in samples if s.mask.any()])
    best = max(range(len(choices)), key=lambda i: (round(float(dice[i]), 9), -i))
    return outlines[best], float(dice[best])


def _overlaps(samples: list[Sample], sources: list[str], predictions, choices: int) -> tuple[np.ndarray, np.ndarray]:
    """Per source (rows of ``sources``) and choice (``choices`` columns): the pixels predicted and true, and the
    predicted plus true pixels, pooled over that source's samples; ``predictions`` gives each sample's bool masks, one
    per choice."""
    inter, total = np.zeros((len(sources), choices)), np.zeros((len(sources), choices))
    for s, masks in zip(samples, predictions):
        truth, row = s.mask.astype(bool), sources.index(s.source)
        total[row] += np.count_nonzero(truth)
        for i, pred in enumerate(masks):
            inter[row, i] += np.count_nonzero(pred & truth)
            total[row, i] += np.count_nonzero(pred)
    return inter, total


def _pooled(per_source: dict) -> tuple[int, int, int]:
    """(tp, fp, fn) summed over the sources of ``{source: [tp, fp, fn, images]}``."""
    return tuple(sum(counts[i] for counts in per_source.values()) for i in range(3))


def balanced_dice(source_dice: np.ndarray, rows_with_truth) -> np.ndarray:
    """Mean Dice over the sources (rows), each counted once however many pixels it has, per threshold.

    Only sources whose validation images hold a glomerulus count: on glomerulus-free images Dice is 1
    or 0 by a single false speck, a coin that would outvote the sources with something to find. With
    none holding one, every source counts."""
    rows = sorted(set(rows_with_truth)) or list(range(len(source_dice)))
    return source_dice[rows].mean(axis=0)


def _f1(tp: int, fp: int, fn: int) -> float:
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)

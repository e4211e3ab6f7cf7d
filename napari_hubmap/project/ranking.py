"""The review queue: tiles ranked by how likely their ground truth is wrong or the prediction unsure.

Per tile (working scale), with P = primary prediction >= threshold and G = ground truth > 0:

* ``dice``, ``iou`` of P against G (Kaggle: 1.0 when both are empty), the competitors' per-image rule
  for spotting noisy labels, here per tile;
* ``near_threshold``: fraction of the tile's pixels whose probability lies within ``NEAR`` (0.15) of
  the threshold;
* ``disagreement`` (with two or more maps: ensemble members, TTA runs): mean over pixels of the maps'
  mean absolute deviation from their mean, times 2 (1.0 = maps split 0/1), else None;
* ``uncertainty`` = mean of ``near_threshold`` and ``disagreement`` (those present), in [0, 1].

Score (higher = review first)::

    score = (1 - dice) * min(1, |P ∪ G| / min_area) + weight * uncertainty      (weight 0.25)

The area factor keeps small disagreements (a few noisy predicted pixels where the ground truth is
empty, a glomerulus edge just entering a tile) from outranking tiles where whole objects disagree.
``min_area`` is a quarter of the median ground-truth object area: in :func:`review_queue` the median
of the slides' medians recorded at import (project-wide, so one slide's few objects do not set it),
in :func:`rank_tiles` that slide's own; 1% of a tile without objects. Without ground truth the score is
the uncertainty alone. Ties: higher uncertainty, then slide order, row, column.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import HubmapInputError
from ..metrics import pixel_scores
from ..postprocess.config import foreground
from .tiles import Tile, tile_grid

NEAR = 0.15
WEIGHT = 0.25
MIN_AREA_OF_MEDIAN = 0.25
MIN_AREA_FRACTION = 0.01  # of a tile, when there are no objects to take the size from


@dataclass
class TileEntry:
    slide: str
    tile: str
    y0: int
    x0: int
    y1: int
    x1: int
    dice: float | None
    iou: float | None
    uncertainty: float
    near_threshold: float
    disagreement: float | None
    gt_pixels: int | None
    pred_pixels: int
    score: float
    state: str = "unreviewed"

    def as_dict(self) -> dict:
        out = asdict(self)
        for key in ("dice", "iou", "uncertainty", "near_threshold", "disagreement", "score"):
            if out[key] is not None:
                out[key] = round(float(out[key]), 6)
        return out


def _as_float(prob: np.ndarray) -> np.ndarray:
    prob = np.asarray(prob)
    if prob.dtype == np.uint8:
        return prob.astype(np.float32) / 255.0
    if prob.dtype.kind == "f":
        return np.nan_to_num(prob.astype(np.float32, copy=False), nan=0.0)
    raise HubmapInputError(None, f"a probability map must be uint8 (0-255) or float (0-1), got {prob.dtype}")


def _measure(gt, probs: list, threshold: float) -> dict:
    """Everything about one tile except its score (which needs ``min_area``)."""
    if not probs:
        raise HubmapInputError(None, "ranking needs at least one probability map")
    pred = foreground(probs[0], threshold)
    values = [_as_float(p) for p in probs]
    near = float(np.mean(np.abs(values[0] - threshold) < NEAR)) if pred.size else 0.0
    disagreement = None
    if len(values) > 1:
        stack = np.stack(values)
        disagreement = float(min(1.0, 2 * np.mean(np.abs(stack - stack.mean(axis=0)))))
    uncertainty = float(np.mean([near] + ([disagreement] if disagreement is not None else [])))
    out = {"dice": None, "iou": None, "near_threshold": near, "disagreement": disagreement, "uncertainty": uncertainty,
           "gt_pixels": None, "pred_pixels": int(np.count_nonzero(pred)), "union": 0}
    if gt is not None:
        scores = pixel_scores(pred, gt)
        out.update(dice=scores.dice, iou=scores.iou, gt_pixels=scores.gt_pixels,
                   union=scores.pred_pixels + scores.gt_pixels - scores.intersection)
    return out


def _score(numbers: dict, min_area: float, weight: float) -> dict:
    numbers = dict(numbers)
    union = numbers.pop("union")
    if numbers["dice"] is None:
        numbers["score"] = numbers["uncertainty"]
    else:
        numbers["score"] = (1.0 - numbers["dice"]) * min(1.0, union / max(min_area, 1e-9)) + weight * numbers["uncertainty"]
    return numbers


def score_tile(gt, probs: list, threshold: float, *, min_area: float, weight: float = WEIGHT) -> dict:
    """The module's numbers for one tile: ``gt`` labels/mask or None, ``probs`` one or more maps."""
    return _score(_measure(gt, probs, threshold), min_area, weight)


def rank_tiles(slide_id: str, gt, probs: list, threshold: float, tile_size: int, *, states=None,
               min_area: float | None = None, weight: float = WEIGHT) -> list[TileEntry]:
    """Score every tile of one slide (arrays numpy or zarr, read once, a row of tiles at a time), best first.

    ``states``: tile key -> state (default all unreviewed); ``min_area`` default: see the module doc."""
    shape = tuple(int(s) for s in probs[0].shape)
    for p in probs[1:]:
        if tuple(p.shape) != shape:
            raise HubmapInputError(None, f"probability maps of slide {slide_id!r} differ in shape: {shape} and {tuple(p.shape)}")
    if gt is not None and tuple(gt.shape) != shape:
        raise HubmapInputError(None, f"ground truth of slide {slide_id!r} is {tuple(gt.shape)}, its prediction {shape}")
    measured, areas, band = [], {}, None
    for t in tile_grid(shape, tile_size):
        if band is None or band[0] != t.y0:  # one read per row of tiles and array
            band = (t.y0, None if gt is None else np.asarray(gt[t.y0 : t.y1, :]), [np.asarray(p[t.y0 : t.y1, :]) for p in probs])
        labels = None if gt is None else band[1][:, t.x0 : t.x1]
        if labels is not None and min_area is None:
            ids, counts = np.unique(labels[labels > 0], return_counts=True)
            for i, c in zip(ids.tolist(), counts.tolist()):
                areas[i] = areas.get(i, 0) + c
        measured.append((t, _measure(labels, [p[:, t.x0 : t.x1] for p in band[2]], threshold)))
    if min_area is None:
        min_area = default_min_area(list(areas.values()), tile_size)
    return sort_entries([_entry(slide_id, t, _score(numbers, min_area, weight), (states or {}).get(t.key, "unreviewed"))
                         for t, numbers in measured])


def default_min_area(areas, tile_size: int) -> float:
    """A quarter of the median object area, else 1% of a tile."""
    areas = [a for a in areas if a]
    return MIN_AREA_OF_MEDIAN * float(np.median(areas)) if areas else MIN_AREA_FRACTION * tile_size * tile_size


def _entry(slide_id: str, t: Tile, numbers: dict, state: str) -> TileEntry:
    return TileEntry(slide=slide_id, tile=t.key, y0=t.y0, x0=t.x0, y1=t.y1, x1=t.x1, state=state, **numbers)


def sort_entries(entries: list[TileEntry], slide_order: dict | None = None) -> list[TileEntry]:
    order = slide_order or {}

    def key(e: TileEntry):
        row, col = (int(v) for v in e.tile.split(","))
        return (-e.score, -e.uncertainty, order.get(e.slide, 0), row, col)

    return sorted(entries, key=key)


def precision_at_k(entries: list[TileEntry], positives: set, k: int | None = None) -> float:
    """Share of the first ``k`` (default: as many as ``positives``) entries whose (slide, tile) is a positive."""
    k = len(positives) if k is None else k
    if k <= 0:
        return 1.0
    return sum((e.slide, e.tile) in positives for e in entries[:k]) / k


def review_queue(project, slide_id: str | None = None, *, top: int | None = None, include_reviewed: bool = False,
                 min_area: float | None = None, weight: float = WEIGHT) -> list[TileEntry]:
    """The project's tiles (one slide or all) best-first; reviewed tiles left out unless asked for.

    Every slide in it needs a prediction; slides without one are skipped when ``slide_id`` is None."""
    from .stores import ground_truth_array, probability_arrays

    if slide_id is not None:
        slides = [project.slide(slide_id)]
        if not slides[0].predictions:
            raise HubmapInputError(project.manifest_path, f"slide {slide_id!r} has no prediction to rank tiles by "
                                   "(add one: napari-hubmap project add-slide ... --prediction)")
    else:
        slides = [s for s in project.slides if s.predictions]
    if min_area is None:
        medians = [s.ground_truth.median_area for s in project.slides if s.ground_truth and s.ground_truth.median_area]
        min_area = MIN_AREA_OF_MEDIAN * float(np.median(medians)) if medians else None
    entries: list[TileEntry] = []
    for entry in slides:
        states = {k: e["state"] for k, e in project.review.slides.get(entry.id, {}).items()}
        ranked = rank_tiles(entry.id, ground_truth_array(project, entry.id), probability_arrays(project, entry.id),
                            entry.predictions[0].threshold, project.tile_size, states=states,
                            min_area=min_area, weight=weight)
        entries += [e for e in ranked if include_reviewed or e.state == "unreviewed"]
    entries = sort_entries(entries, {s.id: i for i, s in enumerate(project.slides)})
    return entries if top is None else entries[: max(0, int(top))]

"""Threshold search against ground truth in one pass, and saving the best as a default.

:func:`threshold_curve` reads the map once, block by block, counting per probability value how many
ground-truth foreground and background pixels have it (two 256-bin histograms for uint8 maps; for
float maps one bin per interval between the thresholds asked for). Dice at every threshold follows
from cumulative sums: TP = foreground pixels at or above the cutoff, FP = background ones, FN = the
rest of the foreground. Dice is the Kaggle definition, 2 TP / (2 TP + FP + FN), and 1.0 when
prediction and truth are both empty. The threshold rule is :mod:`.config`'s (``>=``).

:func:`save_threshold` writes the best threshold into a model's ``card.json`` (checked by
:class:`~napari_hubmap.registry.ModelCard`, written atomically). An ensemble's threshold lives in a
small JSON file of its own (:func:`save_ensemble_config`): ``{"kind": "napari-hubmap-ensemble",
"format_version": 1, "models": [names or folders], "threshold": t}``. :func:`save_best_threshold` picks
which, from the models a probability map records (the Post-processing panel's *Save* and
``napari-hubmap save-threshold``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomic
from ..errors import HubmapInputError
from ..jsonio import load_json
from .config import check_threshold, uint8_cutoff
from .source import BlockSource, iter_blocks

DEFAULT_THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)
ENSEMBLE_KIND = "napari-hubmap-ensemble"
ENSEMBLE_FORMAT = 1


@dataclass
class ThresholdCurve:
    """Dice per threshold; ``best_threshold`` maximises it (ties: the one nearest 0.5, then the lower).

    ``foreground_hist`` / ``background_hist`` are the 256-bin counts of a uint8 map (None for float).
    """

    thresholds: np.ndarray
    dice: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    best_threshold: float
    best_dice: float
    foreground_hist: np.ndarray | None = None
    background_hist: np.ndarray | None = None

    def as_dict(self) -> dict:
        return {
            "thresholds": [round(float(t), 6) for t in self.thresholds],
            "dice": [round(float(d), 6) for d in self.dice],
            "best_threshold": round(self.best_threshold, 6),
            "best_dice": round(self.best_dice, 6),
        }


def threshold_curve(prob, gt, thresholds=DEFAULT_THRESHOLDS, *, block: int = 2048) -> ThresholdCurve:
    """Dice of ``prob >= t`` against ``gt > 0`` for each ``t``, in one block-wise pass.

    ``prob``: (H, W) uint8 0-255 or float 0-1, numpy or zarr (read block by block); ``gt``: a bool mask
    or labels of the same shape (numpy or zarr). NaN probabilities count as background.
    """
    thresholds = np.asarray(thresholds, dtype=float).ravel()
    if thresholds.size == 0:
        raise HubmapInputError(None, "no thresholds given")
    for t in thresholds:
        check_threshold(float(t))
    if tuple(prob.shape) != tuple(gt.shape):
        raise HubmapInputError(None, f"probability map {tuple(prob.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    if len(prob.shape) != 2:
        raise HubmapInputError(None, f"a probability map must be 2-D, got shape {tuple(prob.shape)}")
    dtype = np.dtype(prob.dtype)
    if dtype == np.uint8:
        return _uint8_curve(prob, gt, thresholds, block)
    if dtype.kind == "f":
        return _float_curve(prob, gt, thresholds, block)
    raise HubmapInputError(None, f"a probability map must be uint8 (0-255) or float (0-1), got {dtype}")


def _blocks(prob, gt, block):
    prob_source, gt_source = BlockSource(prob), BlockSource(gt)
    for y0, y1, x0, x1 in iter_blocks(tuple(prob.shape), block):
        yield prob_source.read(y0, y1, x0, x1), gt_source.read(y0, y1, x0, x1) != 0


def _uint8_curve(prob, gt, thresholds, block) -> ThresholdCurve:
    counts = np.zeros(512, dtype=np.int64)
    for values, truth in _blocks(prob, gt, block):
        counts += np.bincount(values.ravel().astype(np.intp) + 256 * truth.ravel(), minlength=512)
    background, foreground = counts[:256], counts[256:]
    cutoffs = np.array([uint8_cutoff(float(t)) for t in thresholds])
    at_or_above = lambda hist: np.concatenate((np.cumsum(hist[::-1])[::-1], [0]))  # noqa: E731
    tp, fp = at_or_above(foreground)[cutoffs], at_or_above(background)[cutoffs]
    fn = int(foreground.sum()) - tp
    return _curve(thresholds, tp, fp, fn, foreground, background)


def _float_curve(prob, gt, thresholds, block) -> ThresholdCurve:
    order = np.argsort(thresholds, kind="stable")
    ascending = thresholds[order]
    bins = thresholds.size + 1
    counts = np.zeros(2 * bins, dtype=np.int64)
    for values, truth in _blocks(prob, gt, block):
        above = np.searchsorted(ascending, values.ravel(), side="right")  # how many thresholds <= value
        above[np.isnan(values.ravel())] = 0
        counts += np.bincount(above + bins * truth.ravel(), minlength=2 * bins)
    background, foreground = counts[:bins], counts[bins:]
    # pixel with k thresholds <= value is foreground for ascending thresholds 0..k-1
    tp_sorted = np.cumsum(foreground[::-1])[::-1][1:]
    fp_sorted = np.cumsum(background[::-1])[::-1][1:]
    tp, fp = np.empty_like(tp_sorted), np.empty_like(fp_sorted)
    tp[order], fp[order] = tp_sorted, fp_sorted
    fn = int(foreground.sum()) - tp
    return _curve(thresholds, tp, fp, fn, None, None)


def _curve(thresholds, tp, fp, fn, foreground, background) -> ThresholdCurve:
    denominator = 2 * tp + fp + fn
    dice = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 1.0)
    best = _best(thresholds, dice)
    return ThresholdCurve(thresholds, dice, tp, fp, fn, float(thresholds[best]), float(dice[best]), foreground, background)


def _best(thresholds: np.ndarray, dice: np.ndarray) -> int:
    top = np.flatnonzero(dice >= dice.max() - 1e-12)
    return int(top[np.lexsort((thresholds[top], np.abs(thresholds[top] - 0.5)))[0]])


# --- saving ----------------------------------------------------------------------------------------


def save_threshold(model_or_folder, threshold: float) -> Path:
    """Make ``threshold`` the default of a model (name or folder: its ``card.json``) or of an
    ensemble (a ``.json`` ensemble config, see :func:`save_ensemble_config`). Returns the file written."""
    check_threshold(threshold)
    path = Path(os.fspath(model_or_folder)).expanduser()
    if path.suffix.lower() == ".json" and path.name != "card.json":
        config = read_ensemble_config(path)
        return save_ensemble_config(path, config["models"], threshold)
    from ..registry.store import CARD_FILE, find_model, read_card, update_card

    folder = find_model(model_or_folder)
    try:
        card = read_card(folder).replace(threshold=float(threshold))
    except HubmapInputError as error:
        raise HubmapInputError(folder / CARD_FILE, error.problem) from None
    return update_card(folder, card)


def save_best_threshold(prob_path, threshold: float) -> Path:
    """Make ``threshold`` the default of the models that made a probability map: the card of its one model,
    or an ``ensemble.json`` beside the map for several. Returns the file written."""
    from ..stores.probability import open_probability

    models = [m.get("path") or m.get("name") for m in open_probability(prob_path)[1].get("models") or []]
    if not models or not all(models):
        raise HubmapInputError(prob_path, "the map records no model to save a threshold for")
    if len(models) == 1:
        return save_threshold(models[0], threshold)
    return save_ensemble_config(Path(prob_path).parent / "ensemble.json", models, threshold)


def save_ensemble_config(path, models, threshold: float) -> Path:
    """Write an ensemble config (the member models, by name or folder, and its threshold) atomically."""
    check_threshold(threshold)
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise HubmapInputError(path, "an ensemble config must end in .json")
    names = [os.fspath(m) for m in models]
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise HubmapInputError(path, "an ensemble needs at least one model name or folder")
    payload = {"kind": ENSEMBLE_KIND, "format_version": ENSEMBLE_FORMAT, "models": names, "threshold": float(threshold)}
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
    return path


def read_ensemble_config(path) -> dict:
    """``{"models": [...], "threshold": t}`` of an ensemble config, checked."""
    path = Path(path)
    data = load_json(path, "ensemble config")
    if not isinstance(data, dict) or data.get("kind") != ENSEMBLE_KIND:
        raise HubmapInputError(path, f"not an ensemble config (expected \"kind\": \"{ENSEMBLE_KIND}\")")
    if not isinstance(data.get("format_version"), int) or data["format_version"] > ENSEMBLE_FORMAT:
        raise HubmapInputError(path, f"unsupported ensemble config format_version {data.get('format_version')!r}")
    models, threshold = data.get("models"), data.get("threshold")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
        raise HubmapInputError(path, "ensemble config 'models' must be a non-empty list of names or folders")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or not 0 <= threshold <= 1:
        raise HubmapInputError(path, f"ensemble config 'threshold' must be in [0, 1], got {threshold!r}")
    return {"models": models, "threshold": float(threshold)}

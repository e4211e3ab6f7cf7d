"""Review queue: tiles whose ground truth was corrupted (shifted, erased, false blobs added) come first,
on synthetic discs and on the real H&E kidney regions of ../shared/data/kidney-he; uncertainty ranks
tiles without ground truth; the training set follows the review."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage

from napari_hubmap.project import (
    add_slide,
    init_project,
    open_project,
    precision_at_k,
    rank_tiles,
    read_tile_labels,
    review_queue,
    set_state,
    tile_grid,
    training_set,
)
from napari_hubmap.project.ranking import score_tile

from synthetic_maps import disk, write_prob_store

SHIFT = 15  # working-scale pixels = 30 full-resolution pixels at downscale 2
LOWER_BOUND = 0.8


def reasonable_prediction(mask: np.ndarray, rng) -> np.ndarray:
    """uint8 map that agrees with ``mask``: blurred edges plus smooth noise."""
    blurred = ndimage.gaussian_filter(mask.astype(np.float32), 3)
    noise = ndimage.gaussian_filter(rng.normal(0, 1, mask.shape).astype(np.float32), 4)
    noise *= 0.12 / max(noise.std(), 1e-6)
    return np.clip((0.05 + 0.9 * blurred + noise) * 255, 0, 255).astype(np.uint8)


def corrupt(labels: np.ndarray, tile, kind: str, rng) -> None:
    """Corrupt the ground truth of one tile in place."""
    rows, cols = tile.slices
    if kind == "erase":
        labels[rows, cols] = 0
    elif kind == "shift":  # the annotation drawn SHIFT pixels off, in a random direction
        angle = rng.uniform(0, 2 * np.pi)
        dy, dx = int(round(SHIFT * np.sin(angle))), int(round(SHIFT * np.cos(angle)))
        pad = SHIFT + 1
        padded = np.pad(labels, pad)
        y0, x0 = tile.y0 + pad - dy, tile.x0 + pad - dx
        labels[rows, cols] = padded[y0 : y0 + tile.y1 - tile.y0, x0 : x0 + tile.x1 - tile.x0]
    elif kind == "blob":
        h, w = tile.y1 - tile.y0, tile.x1 - tile.x0
        region = labels[rows, cols]
        for _ in range(2):
            r = int(rng.integers(10, 18))
            cy, cx = int(rng.integers(r, h - r)), int(rng.integers(r, w - r))
            region[disk((h, w), (cy, cx), r)] = labels.max() + 1
    else:
        raise ValueError(kind)


def pick_tiles(candidates: list, rng, per_kind: int) -> dict:
    """{(slide, tile key): kind}: erase/shift on tiles with much ground truth, blobs on empty ones."""
    full = [c for c in candidates if c[2] >= 0.12]
    empty = [c for c in candidates if c[2] == 0 and min(c[1].y1 - c[1].y0, c[1].x1 - c[1].x0) >= 60]
    chosen = {}
    order = rng.permutation(len(full))
    for n, kind in enumerate(["erase"] * per_kind + ["shift"] * per_kind):
        slide, t, _ = full[order[n]]
        chosen[(slide, t.key)] = (kind, t)
    for i in rng.permutation(len(empty))[:per_kind]:
        slide, t, _ = empty[i]
        chosen[(slide, t.key)] = ("blob", t)
    return chosen


def test_synthetic_corruptions_rank_first():
    rng = np.random.default_rng(5)
    shape, size = (640, 960), 64
    truth = np.zeros(shape, np.int32)
    for n in range(45):
        r = int(rng.integers(14, 30))
        truth[disk(shape, (int(rng.integers(r, shape[0] - r)), int(rng.integers(r, shape[1] - r))), r)] = n + 1
    prob = reasonable_prediction(truth > 0, rng)
    gt = truth.copy()
    tiles = tile_grid(shape, size)
    candidates = [("s", t, float((truth[t.slices] > 0).mean())) for t in tiles]
    chosen = pick_tiles(candidates, rng, per_kind=4)
    for (_, _), (kind, t) in chosen.items():
        corrupt(gt, t, kind, rng)
    ranked = rank_tiles("s", gt, [prob], 0.5, size)
    p = precision_at_k(ranked, set(chosen))
    print(f"\nsynthetic: precision@{len(chosen)} = {p:.3f}")
    assert p >= LOWER_BOUND


def test_uncertainty_ranks_tiles_without_ground_truth():
    shape = (128, 256)
    sure = np.where(disk(shape, (64, 64), 30) | disk(shape, (64, 192), 30), 250, 5).astype(np.uint8)
    member = sure.copy()
    member[disk(shape, (64, 192), 30)] = 40  # the members disagree on the right tile
    ranked = rank_tiles("s", None, [sure, member], 0.5, 128)
    assert [e.tile for e in ranked] == ["0,1", "0,0"]
    assert ranked[0].disagreement > 0.1 and ranked[1].disagreement == 0 and ranked[0].dice is None
    unsure = np.full((64, 64), 120, np.uint8)  # all within 0.15 of the threshold
    assert score_tile(None, [unsure], 0.5, min_area=40)["near_threshold"] == 1.0
    both_empty = score_tile(np.zeros((64, 64), np.int32), [np.zeros((64, 64), np.uint8)], 0.5, min_area=40)
    assert both_empty["dice"] == 1.0 and both_empty["score"] == 0.0


@pytest.fixture(scope="module")
def corrupted_project(shared_data, tmp_path_factory):
    """All kidney-he regions in one project at downscale 2, tiles of 128, with a reasonable prediction and
    the ground truth of 3 x 8 tiles corrupted. Returns (project root, {(slide, tile): kind})."""
    from napari_hubmap.annotations import rasterize, read_annotations

    folder = shared_data / "kidney-he"
    images = sorted((folder / "images").glob("*.png"))
    assert len(images) >= 10, folder
    work = tmp_path_factory.mktemp("kidney-he-project")
    rng = np.random.default_rng(7)
    d, size = 2, 128
    truths, candidates = {}, []
    for image in images:
        with Image.open(image) as opened:
            w, h = opened.size
        shape = (-(-h // d), -(-w // d))
        labels = rasterize(read_annotations(folder / "annotations" / f"{image.stem}.geojson"), shape, downsample=d).astype(np.int32)
        truths[image.stem] = labels
        candidates += [(image.stem, t, float((labels[t.slices] > 0).mean())) for t in tile_grid(shape, size)]
    chosen = pick_tiles(candidates, rng, per_kind=8)
    project = init_project(work / "project", tile=size, downscale=d)
    for image in images:
        truth = truths[image.stem]
        gt = truth.copy()
        for (slide, _), (kind, t) in chosen.items():
            if slide == image.stem:
                corrupt(gt, t, kind, rng)
        gt_path = work / f"{image.stem}.noisy.tif"
        tifffile.imwrite(gt_path, gt.astype(np.uint16))
        prob = write_prob_store(work / f"{image.stem}.prob.zarr", reasonable_prediction(truth > 0, rng), downscale=float(d))
        add_slide(project, image, ground_truth=gt_path, predictions=[prob])
    return work / "project", {key: kind for key, (kind, _) in chosen.items()}


def test_queue_finds_corrupted_ground_truth_on_kidney_he(corrupted_project):
    root, chosen = corrupted_project
    project = open_project(root)
    queue = review_queue(project)
    k = len(chosen)
    p = precision_at_k(queue, set(chosen))
    found = {kind: sum(chosen.get((e.slide, e.tile)) == kind for e in queue[:k]) for kind in ("erase", "shift", "blob")}
    print(f"\nkidney-he: {len(queue)} tiles, {k} corrupted; precision@{k} = {p:.3f}; found in the top {k}: {found}")
    assert p >= LOWER_BOUND
    assert len(queue) == sum(len(tile_grid(project.working_shape(s.id), project.tile_size)) for s in project.slides)


def test_dropped_tiles_leave_the_training_set_accepted_ones_join(corrupted_project):
    root, chosen = corrupted_project
    project = open_project(root)
    queue = review_queue(project)
    before = training_set(project)
    dropped = [(e.slide, e.tile) for e in queue[:5]]
    accepted = [(e.slide, e.tile) for e in queue[5:8]]
    for slide, key in dropped:
        set_state(project, slide, key, "dropped")
    for slide, key in accepted:
        set_state(project, slide, key, "accepted")
    after = {(t.slide, t.tile): t for t in training_set(open_project(root))}
    assert len(after) == len(before) - len(dropped)
    assert not set(dropped) & set(after)
    for key in accepted:
        assert after[key].label_source == "pseudo_label"
        labels = read_tile_labels(project, after[key])
        assert labels.shape == (after[key].box[2] - after[key].box[0], after[key].box[3] - after[key].box[1])
    assert {t.label_source for k, t in after.items() if k not in accepted} == {"ground_truth"}
    assert project.review.counts()["dropped"] == 5 and project.review.counts()["accepted"] == 3
    reopened = open_project(root)
    for slide in {slide for slide, _ in dropped + accepted}:
        remaining = {(e.slide, e.tile) for e in review_queue(reopened, slide)}
        assert not remaining & set(dropped + accepted)
        assert len(remaining) == len(tile_grid(reopened.working_shape(slide), reopened.tile_size)) - sum(
            s == slide for s, _ in dropped + accepted)
    for slide, key in dropped + accepted:  # leave the shared fixture as it was
        set_state(project, slide, key, "unreviewed")

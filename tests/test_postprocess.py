"""Post-processing: watershed, min size, holes, block-wise = whole-array, slide stores, cancel,
threshold search against brute force, saving thresholds."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from scipy import ndimage
from skimage import measure
from synthetic_maps import blob_map, disk, write_prob_store

from napari_hubmap.errors import HubmapInputError
from napari_hubmap.postprocess import (
    PostprocessConfig,
    postprocess_region,
    postprocess_slide,
    read_ensemble_config,
    save_ensemble_config,
    save_threshold,
    threshold_curve,
    uint8_cutoff,
)
from napari_hubmap.postprocess.pipeline import labels_array
from napari_hubmap.postprocess.source import BlockSource
from napari_hubmap.progress import Cancelled
from napari_hubmap.stores.labels import open_labels


def two_touching_and_one_lone(shape=(120, 200)) -> np.ndarray:
    touching = disk(shape, (60, 40), 20) | disk(shape, (60, 76), 20)  # centres 36 apart: a neck
    lone = disk(shape, (60, 150), 22)
    return np.where(touching | lone, 230, 10).astype(np.uint8)


def blockwise(prob, config, block) -> np.ndarray:
    return labels_array(BlockSource(prob), config, block)


@pytest.mark.parametrize("markers", ["distance", "h-maxima"])
def test_watershed_splits_touching_disks_and_keeps_a_lone_disk_whole(markers):
    prob = two_touching_and_one_lone()
    plain = postprocess_region(prob, PostprocessConfig())
    assert plain.max() == 2  # the touching pair is one object before splitting
    labels = postprocess_region(prob, PostprocessConfig(watershed=True, markers=markers))
    assert labels.max() == 3
    assert np.array_equal(labels > 0, plain > 0)  # splitting never loses or adds pixels
    left, right, lone = (labels[60, x] for x in (40, 76, 150))
    assert len({left, right, lone}) == 3 and 0 not in (left, right, lone)
    assert np.unique(labels[plain == plain[60, 150]]).tolist() == [lone]
    for piece in (left, right):  # each half is about one disk
        assert abs(int((labels == piece).sum()) - np.pi * 20**2) < 0.25 * np.pi * 20**2


def test_min_size_removes_small_objects_only():
    shape = (100, 100)
    prob = np.where(disk(shape, (30, 30), 3) | disk(shape, (70, 70), 12), 200, 0).astype(np.uint8)
    small, big = int(disk(shape, (30, 30), 3).sum()), int(disk(shape, (70, 70), 12).sum())
    kept = postprocess_region(prob, PostprocessConfig(min_size=small + 1))
    assert kept.max() == 1 and kept[70, 70] == 1 and kept[30, 30] == 0
    assert postprocess_region(prob, PostprocessConfig(min_size=small)).max() == 2
    assert postprocess_region(prob, PostprocessConfig(min_size=big + 1)).max() == 0


def test_holes_are_filled_and_an_island_in_a_hole_joins_its_container():
    shape = (120, 120)
    ring = disk(shape, (60, 60), 40) & ~disk(shape, (60, 60), 25)
    island = disk(shape, (60, 60), 8)
    prob = np.where(ring | island, 255, 0).astype(np.uint8)
    filled = postprocess_region(prob, PostprocessConfig(fill_holes=True))
    assert filled.max() == 1 and np.array_equal(filled > 0, disk(shape, (60, 60), 40))
    open_ = postprocess_region(prob, PostprocessConfig(fill_holes=False))
    assert open_.max() == 2 and open_[60, 60] == 2 and open_[60, 45] == 0
    # the ring alone is under min_size once holes are left open, over it once they are filled
    area = int(disk(shape, (60, 60), 40).sum())
    assert postprocess_region(prob, PostprocessConfig(min_size=area)).max() == 1


def test_region_matches_skimage_labelling():
    prob = blob_map()
    no_fill = postprocess_region(prob, PostprocessConfig(threshold=0.5, fill_holes=False))
    assert np.array_equal(no_fill, measure.label(prob >= 128, connectivity=2))
    filled = postprocess_region(prob, PostprocessConfig(threshold=0.55))
    assert np.array_equal(filled, measure.label(ndimage.binary_fill_holes(prob >= uint8_cutoff(0.55)), connectivity=2))


def test_uint8_and_float_maps_follow_the_same_threshold_rule():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for t in list(np.round(np.arange(0.05, 0.951, 0.05), 2)) + [0.0, 1.0, 0.123, 0.5019607843137255]:
        as_uint8 = postprocess_region(values, PostprocessConfig(threshold=t, fill_holes=False)) > 0
        as_float = postprocess_region(values / 255.0, PostprocessConfig(threshold=t, fill_holes=False)) > 0
        assert np.array_equal(as_uint8, as_float), t
        assert np.array_equal(as_uint8, values / 255.0 >= t), t


CONFIGS = [
    PostprocessConfig(threshold=0.5, fill_holes=False),
    PostprocessConfig(threshold=0.5, min_size=15),
    PostprocessConfig(threshold=0.45, watershed=True, min_distance=5),
    PostprocessConfig(threshold=0.5, watershed=True, markers="h-maxima", h=1.5, compactness=0.01, min_size=10),
    PostprocessConfig(threshold=0.5, min_size=15, grow=3),
    PostprocessConfig(threshold=0.45, watershed=True, min_distance=5, grow=6),
    PostprocessConfig(threshold=0.65, min_size=15, outline_threshold=0.45),
    PostprocessConfig(threshold=0.7, watershed=True, min_distance=5, outline_threshold=0.4, grow=2),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["plain", "fill+minsize", "watershed", "h-maxima", "grow", "watershed+grow",
                                                 "outline", "outline+watershed+grow"])
def test_blockwise_equals_whole_array(config):
    prob = blob_map()
    whole = postprocess_region(prob, config)
    assert whole.max() > 20
    objects = measure.label(prob >= uint8_cutoff(config.lower_threshold), connectivity=2)
    boxes = ndimage.find_objects(objects)
    assert any(b[1].stop - b[1].start > 128 for b in boxes), "some object must cross several 64-px blocks"
    for block in (16, 37, 64, 100, 299):
        assert np.array_equal(blockwise(prob, config, block), whole), block


def test_slide_store_equals_region_and_overlays_the_slide(tmp_path):
    from PIL import Image

    prob = blob_map((1100, 300), seed=3)  # tall enough for a second pyramid level
    slide = tmp_path / "slide.png"
    Image.fromarray(np.zeros((2199, 600, 3), np.uint8)).save(slide)  # odd height: ceil(2199 / 2) = 1100
    store = write_prob_store(tmp_path / "slide.prob.zarr", prob, downscale=2.0, settings={"slide": str(slide)})
    config = PostprocessConfig(watershed=True, min_distance=5, min_size=5)
    whole = postprocess_region(prob, config)
    calls = []
    result = postprocess_slide(store, tmp_path / "slide.labels.zarr", config, block=256, progress=lambda p: calls.append((p.done, p.total)))
    levels, meta = open_labels(tmp_path / "slide.labels.zarr")
    assert np.array_equal(np.asarray(levels[0]), whole) and levels[0].dtype == np.uint32
    assert np.array_equal(np.asarray(levels[1]), whole[::2, ::2])
    assert result.objects == whole.max() == meta["objects"]
    assert meta["downscale"] == 2.0 and meta["slide_shape"] == [2199, 600] and meta["postprocess"]["watershed"]
    group_attrs = json.loads((tmp_path / "slide.labels.zarr" / ".zattrs").read_text())
    assert [d["coordinateTransformations"][0]["scale"] for d in group_attrs["multiscales"][0]["datasets"]] == [[2.0, 2.0], [4.0, 4.0]]
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1]
    assert result.megapixels_per_s > 0 and result.seconds > 0


def test_cancel_leaves_no_output_and_keeps_an_older_one(tmp_path):
    prob = blob_map()
    store = write_prob_store(tmp_path / "m.prob.zarr", prob)
    out = tmp_path / "m.labels.zarr"
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        postprocess_slide(store, out, PostprocessConfig(), cancel=cancel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.prob.zarr"]
    postprocess_slide(store, out, PostprocessConfig(threshold=0.6), block=128)
    before = np.asarray(open_labels(out)[0][0])
    late = threading.Event()

    def progress(update):
        if update.done == update.total - 1:  # during the last block write
            late.set()

    with pytest.raises(Cancelled):
        postprocess_slide(store, out, PostprocessConfig(threshold=0.4), block=128, progress=progress, cancel=late)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.labels.zarr", "m.prob.zarr"]
    assert np.array_equal(np.asarray(open_labels(out)[0][0]), before)


def test_slide_refuses_bad_inputs(tmp_path):
    store = write_prob_store(tmp_path / "m.prob.zarr", blob_map((64, 64)))
    with pytest.raises(HubmapInputError, match="not found"):
        postprocess_slide(tmp_path / "missing.prob.zarr", tmp_path / "o.zarr")
    mine = tmp_path / "mine.zarr"
    mine.mkdir()
    (mine / "keep.txt").write_text("precious")
    with pytest.raises(HubmapInputError, match="not a labels store"):
        postprocess_slide(store, mine)
    assert (mine / "keep.txt").read_text() == "precious"
    with pytest.raises(HubmapInputError, match="probability"):
        postprocess_slide(store, store)
    with pytest.raises(HubmapInputError, match="threshold"):
        PostprocessConfig(threshold=1.5)
    with pytest.raises(HubmapInputError, match="markers"):
        PostprocessConfig(markers="peaks")
    with pytest.raises(HubmapInputError, match="h must be > 0"):
        PostprocessConfig(markers="h-maxima", h=0)


def brute_force_dice(prob_float, truth, t):
    pred = prob_float >= t
    denominator = pred.sum() + truth.sum()
    return 1.0 if denominator == 0 else 2 * (pred & truth).sum() / denominator


def test_threshold_curve_equals_brute_force(tmp_path):
    import zarr

    prob = blob_map(seed=5)
    gt = measure.label(ndimage.gaussian_filter(prob.astype(float), 2) > 120)
    stored = zarr.open_array(tmp_path / "p.zarr", mode="w", shape=prob.shape, chunks=(64, 64), dtype="uint8", zarr_format=2)
    stored[:] = prob
    for source in (prob, stored):
        curve = threshold_curve(source, gt, block=100)
        expected = [brute_force_dice(prob / 255.0, gt > 0, t) for t in curve.thresholds]
        assert np.allclose(curve.dice, expected, atol=1e-12)
        assert curve.best_dice == max(expected) and curve.best_threshold in curve.thresholds
        assert curve.foreground_hist.sum() == (gt > 0).sum()
    assert len(curve.thresholds) == 19 and curve.thresholds[0] == 0.05 and curve.thresholds[-1] == 0.95
    floats = prob / 255.0
    curve = threshold_curve(floats, gt, [0.7, 0.3, 0.5])
    assert np.allclose(curve.dice, [brute_force_dice(floats, gt > 0, t) for t in (0.7, 0.3, 0.5)])


def test_threshold_curve_empty_cases():
    empty = np.zeros((20, 20), np.uint8)
    both = threshold_curve(empty, np.zeros((20, 20), bool))
    assert np.all(both.dice == 1.0) and both.best_threshold == 0.5
    only_pred = threshold_curve(np.full((20, 20), 255, np.uint8), np.zeros((20, 20), bool))
    assert np.all(only_pred.dice == 0.0)
    with pytest.raises(HubmapInputError, match="shape"):
        threshold_curve(empty, np.zeros((5, 5), bool))


def test_save_threshold_into_a_card_and_an_ensemble_config(tmp_path):
    from napari_hubmap.registry import ModelCard, read_card

    folder = tmp_path / "tiny"
    folder.mkdir()
    card = ModelCard(name="tiny", architecture="Unet", encoder="resnet18")
    (folder / "card.json").write_text(card.to_json())
    (folder / "model.safetensors").write_bytes(b"")
    written = save_threshold(folder, 0.35)
    assert written == folder / "card.json"
    assert read_card(folder).threshold == 0.35 and read_card(folder).name == "tiny"
    with pytest.raises(HubmapInputError, match="threshold"):
        save_threshold(folder, 1.2)
    assert read_card(folder).threshold == 0.35
    ensemble = save_ensemble_config(tmp_path / "ens.json", ["tiny", str(folder)], 0.4)
    assert read_ensemble_config(ensemble) == {"models": ["tiny", str(folder)], "threshold": 0.4}
    save_threshold(ensemble, 0.45)
    assert read_ensemble_config(ensemble)["threshold"] == 0.45
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(HubmapInputError, match="not an ensemble config"):
        save_threshold(tmp_path / "bad.json", 0.5)


def test_grow_brings_outlines_out_without_crossing_objects_or_the_map_edge():
    """Two discs 7 px apart and one at the map's edge, grown by 4 px: each gains the background within 4 px
    of it; between the close pair each takes only the pixels nearer to it (the middle column, equally near
    both, joins neither); the objects themselves are unchanged and the edge disc grows where the map goes on."""
    prob = np.zeros((80, 120), np.float32)
    yy, xx = np.mgrid[:80, :120]
    left, right = np.hypot(yy - 40, xx - 30) <= 10, np.hypot(yy - 40, xx - 58) <= 10  # rows 40: 20..40, 48..68
    edge = np.hypot(yy - 5, xx - 105) <= 9
    prob[left | right | edge] = 0.9
    plain = postprocess_region(prob, PostprocessConfig(threshold=0.5))
    grown = postprocess_region(prob, PostprocessConfig(threshold=0.5, grow=4))
    assert plain.max() == grown.max() == 3
    assert np.array_equal(grown[plain > 0] > 0, np.ones(int((plain > 0).sum()), bool))
    a, b = grown[40, 30], grown[40, 58]
    assert a != b and (grown[40, 16:44] == a).all() and grown[40, 15] == 0
    assert grown[40, 44] == 0 and (grown[40, 45:73] == b).all() and grown[40, 73] == 0  # 44: a tie
    ring = (np.hypot(yy - 40, xx - 30) <= 13.5) & (xx < 44)
    assert (grown[ring] == a).all()
    top = grown[5, 105]
    assert (grown == top).sum() > (plain == plain[5, 105]).sum() and grown[18, 105] == top and grown[19, 105] == 0
    with pytest.raises(HubmapInputError, match="grow must be a whole number"):
        PostprocessConfig(grow=-1)


def test_outline_threshold_spreads_found_objects_and_keeps_them_apart():
    """Hysteresis: cones whose peaks clear 0.8 keep the connected pixels down to 0.4 (the outline), two peaks on one
    shoulder (0.44 between them) stay two objects split along the valley, a cone that never clears 0.8 is not a glomerulus, and the size
    floor counts the pixels at 0.8; at or above the threshold the outline changes nothing."""
    yy, xx = np.mgrid[:80, :200]
    cone = lambda cy, cx, r, top: np.clip(top * (1 - np.hypot(yy - cy, xx - cx) / r), 0, 1)  # noqa: E731
    prob = np.maximum.reduce([cone(40, 30, 25, 1.0), cone(40, 58, 25, 1.0), cone(40, 150, 25, 0.7), cone(40, 185, 14, 0.9)])
    plain = postprocess_region(prob, PostprocessConfig(threshold=0.8))
    spread = postprocess_region(prob, PostprocessConfig(threshold=0.8, outline_threshold=0.4))
    assert plain.max() == 3 and spread.max() == 3  # the 0.7 cone is dropped either way
    left, right = spread[40, 30], spread[40, 58]
    assert left != right and spread[40, 150] == 0
    assert (spread[40, 30:44] == left).all() and (spread[40, 45:59] == right).all()  # split at the valley, x = 44
    assert ((spread > 0) == ((prob >= 0.4) & ~(np.abs(xx - 150) < 25))).all()  # every pixel >= 0.4 but the dropped cone's
    assert np.array_equal(spread[plain > 0] > 0, np.ones(int((plain > 0).sum()), bool))
    floored = postprocess_region(prob, PostprocessConfig(threshold=0.8, min_size=40, outline_threshold=0.4))
    assert floored.max() == 2 and floored[40, 185] == 0  # the small cone's 0.8 core is under 40 px, its shoulder is not
    same = postprocess_region(prob, PostprocessConfig(threshold=0.8, outline_threshold=0.8))
    assert np.array_equal(same, plain) and not PostprocessConfig(threshold=0.5, outline_threshold=0.6).spreads
    with pytest.raises(HubmapInputError, match="outline_threshold must be in"):
        PostprocessConfig(outline_threshold=1.5)

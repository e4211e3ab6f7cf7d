"""Tests of the deterministic synthetic slide generator (napari_hubmap.synth)."""

from __future__ import annotations

import os
import threading
import tracemalloc

import numpy as np
import pytest
import tifffile
from shapely.geometry import Polygon

from napari_hubmap.progress import Cancelled
from napari_hubmap.synth import (
    SynthSpec,
    glomeruli,
    glomeruli_in_region,
    ground_truth_labels,
    render_region,
    sample_image,
    sample_spec,
    write_synthetic_tiff,
)

GLASS_MIN = 236  # every channel of glass pixels is at least this (PAS glass ~ 243, 241, 244)


def _dense_spec(width=1800, height=1400, seed=3, stain="pas") -> SynthSpec:
    """A small slide with plenty of tissue and glomeruli."""
    return SynthSpec(width, height, seed=seed, stain=stain, glomeruli_per_mm2=15, tissue_fraction=0.75)


@pytest.fixture(scope="module")
def dense():
    """(spec, image, labels) of a small dense slide, rendered once."""
    spec = _dense_spec()
    image = render_region(spec, 0, spec.height, 0, spec.width)
    labels = ground_truth_labels(spec, 0, spec.height, 0, spec.width)
    return spec, image, labels


def _is_glass(image: np.ndarray) -> np.ndarray:
    return (image >= GLASS_MIN).all(axis=-1)


# --- determinism and tiling ---------------------------------------------------------------------


@pytest.mark.parametrize("stain", ["pas", "he"])
def test_same_seed_same_bytes_different_seed_different(stain):
    a = render_region(_dense_spec(700, 500, seed=11, stain=stain), 0, 500, 0, 700)
    b = render_region(_dense_spec(700, 500, seed=11, stain=stain), 0, 500, 0, 700)
    c = render_region(_dense_spec(700, 500, seed=12, stain=stain), 0, 500, 0, 700)
    assert a.dtype == np.uint8 and a.shape == (500, 700, 3)
    assert a.tobytes() == b.tobytes()
    assert (a != c).mean() > 0.2


def test_stains_differ(dense):
    spec, image, _ = dense
    he = render_region(_dense_spec(stain="he"), 0, spec.height, 0, spec.width)
    tissue = ~_is_glass(image)
    assert np.abs(image[tissue].mean(0) - he[tissue].mean(0)).max() > 5


def test_region_equals_concatenation_of_parts(dense):
    spec, image, _ = dense
    g = glomeruli(spec)[0]  # a region with a glomerulus, tubules and maybe an edge
    y0, x0 = max(0, int(g.cy) - 301), max(0, int(g.cx) - 257)
    y1, x1 = min(spec.height, y0 + 603), min(spec.width, x0 + 517)
    cuts_y, cuts_x = [y0, y0 + 1, y0 + 130, y0 + 317, y1], [x0, x0 + 77, x0 + 78, x0 + 391, x1]
    rows = [
        np.concatenate(
            [render_region(spec, ya, yb, xa, xb) for xa, xb in zip(cuts_x, cuts_x[1:])], axis=1
        )
        for ya, yb in zip(cuts_y, cuts_y[1:])
    ]
    assert np.array_equal(np.concatenate(rows, axis=0), image[y0:y1, x0:x1])


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_downsample_samples_full_resolution(dense, factor):
    spec, image, labels = dense
    small = render_region(spec, 0, spec.height, 0, spec.width, downsample=factor)
    assert small.shape == (-(-spec.height // factor), -(-spec.width // factor), 3)
    assert np.array_equal(small, image[::factor, ::factor])
    small_labels = ground_truth_labels(spec, 0, spec.height, 0, spec.width, downsample=factor)
    assert np.array_equal(small_labels, labels[::factor, ::factor])


@pytest.mark.parametrize("factor", [2, 4])
def test_downsampled_tiles_match_level(dense, factor):
    spec, _, _ = dense
    level = render_region(spec, 0, spec.height, 0, spec.width, downsample=factor)
    # a level tile at level pixels [r0:r1, c0:c1] is the full-resolution region times factor
    for r0, r1, c0, c1 in [(0, 97, 0, 131), (97, 256, 131, 333), (150, level.shape[0], 200, level.shape[1])]:
        y1, x1 = min(spec.height, r1 * factor), min(spec.width, c1 * factor)
        tile = render_region(spec, r0 * factor, y1, c0 * factor, x1, downsample=factor)
        assert np.array_equal(tile, level[r0:r1, c0:c1])


@pytest.mark.parametrize("step", [1, 2, 3, 4])
def test_dot_stamping_equals_per_sample_candidates(step):
    from napari_hubmap.synth.dots import DotStyle, _candidate_dots, _stamped_dots

    style = DotStyle(16, 4.2, 5.6, 0.7)

    def keep(rows, cols, u):
        return u < 0.6

    for y0, h, x0, w in [(1000, 256, 3000, 512), (7, 33, 5, 77), (0, 1, 0, 40), (123, 5, 999, 1)]:
        ys, xs = y0 + step * np.arange(h), x0 + step * np.arange(w)
        stamped = _stamped_dots(ys, xs, step, style, 5, keep)
        assert np.array_equal(stamped, _candidate_dots(ys, xs, style, 5, keep))
        assert 0 <= stamped.min() and stamped.max() <= 1


def test_bad_arguments():
    with pytest.raises(ValueError):
        SynthSpec(100, 100, stain="ihc")
    with pytest.raises(ValueError):
        SynthSpec(0, 100)
    spec = SynthSpec(100, 80)
    with pytest.raises(ValueError):
        render_region(spec, 0, 81, 0, 100)
    with pytest.raises(ValueError):
        render_region(spec, 0, 80, 0, 100, downsample=0)


# --- glomeruli ----------------------------------------------------------------------------------


def test_glomeruli_inside_image_and_tissue(dense):
    spec, image, _ = dense
    gloms = glomeruli(spec)
    assert len(gloms) >= 3
    glass = _is_glass(image)
    yy, xx = np.mgrid[0 : spec.height, 0 : spec.width]
    for g in gloms:
        xs, ys = g.polygon[:, 0], g.polygon[:, 1]
        assert xs.min() >= 0 and ys.min() >= 0 and xs.max() <= spec.width and ys.max() <= spec.height
        assert 0.5 * spec.px(100) * 0.6 < min(g.rx, g.ry) <= max(g.rx, g.ry) < 0.5 * spec.px(100) * 1.6
        # the ring just outside the glomerulus is tissue, not glass
        r = np.hypot(yy + 0.5 - g.cy, xx + 0.5 - g.cx)
        ring = (r > 1.15 * max(g.rx, g.ry)) & (r < 1.35 * max(g.rx, g.ry))
        assert glass[ring].mean() < 0.25
        assert not glass[int(g.cy), int(g.cx)]


def test_glomeruli_do_not_overlap_and_region_query(dense):
    spec, _, _ = dense
    gloms = glomeruli(spec)
    shapes = [Polygon(g.polygon) for g in gloms]
    for i, a in enumerate(shapes):
        assert a.is_valid
        for b in shapes[i + 1 :]:
            assert not a.intersects(b)
    assert [g.label for g in gloms] == list(range(1, len(gloms) + 1))
    g = gloms[1]
    found = glomeruli_in_region(spec, int(g.cy), int(g.cy) + 1, int(g.cx), int(g.cx) + 1)
    assert [h.label for h in found] == [g.label]
    assert glomeruli_in_region(spec, 0, spec.height, 0, spec.width)[0].label == 1


def test_glomeruli_copies_are_independent(dense):
    spec, _, _ = dense
    first = glomeruli(spec)
    first[0].polygon[:] = 0
    assert glomeruli(spec)[0].polygon.max() > 0


def test_glomerulus_count_scales_with_area():
    densities = []
    counts = {}
    for side in (8192, 16384):
        for seed in (0, 1):
            spec = SynthSpec(side, side, seed=seed, glomeruli_per_mm2=4.0)
            overview = render_region(spec, 0, side, 0, side, downsample=64)
            tissue_mm2 = (~_is_glass(overview)).mean() * side * side * (spec.mpp / 1000) ** 2
            counts[side, seed] = len(glomeruli(spec))
            densities.append(counts[side, seed] / tissue_mm2)
    assert all(2.0 < d < 6.0 for d in densities), densities
    ratio = sum(counts[16384, s] for s in (0, 1)) / sum(counts[8192, s] for s in (0, 1))
    assert 2.5 < ratio < 6.0


def test_glomeruli_computed_fast_for_a_huge_slide():
    import time

    start = time.perf_counter()
    gloms = glomeruli(SynthSpec(50000, 40000, seed=5))
    assert time.perf_counter() - start < 5.0
    assert 400 < len(gloms) < 3000


# --- labels -------------------------------------------------------------------------------------


def test_labels_match_polygons(dense):
    spec, _, labels = dense
    gloms = glomeruli(spec)
    assert labels.dtype == np.int32
    assert set(np.unique(labels)) == set(range(len(gloms) + 1))
    for g in gloms:
        y0, y1, x0, x1 = (int(v) for v in g.bbox)
        inside = labels == g.label
        assert abs(inside.sum() - Polygon(g.polygon).area) < 0.02 * Polygon(g.polygon).area
        ys, xs = np.nonzero(inside)
        assert ys.min() >= y0 and ys.max() < y1 and xs.min() >= x0 and xs.max() < x1


def test_labels_align_with_image(dense):
    from scipy import ndimage

    spec, image, labels = dense
    glass = _is_glass(image)
    glom = labels > 0
    # glomeruli are painted exactly inside the labels: no glass there, and a distinct colour
    assert glass[glom].mean() < 0.02
    glom_mean, tubule_mean = image[glom].mean(0), image[~glom & ~glass].mean(0)
    assert np.abs(glom_mean - tubule_mean).max() > 6
    # the outermost pixels of each label are the dark capsule; just outside is paler tissue
    green = image[..., 1].astype(float)
    for g in glomeruli(spec):
        mask = labels == g.label
        capsule = mask & ~ndimage.binary_erosion(mask, iterations=2)
        outside = ndimage.binary_dilation(mask, iterations=6) & ~ndimage.binary_dilation(mask, iterations=2)
        assert green[capsule].mean() < green[outside].mean() - 15


def test_sample_image():
    image, labels = sample_image(size=(768, 1024), seed=1)
    assert image.shape == (768, 1024, 3) and image.dtype == np.uint8
    assert labels.shape == (768, 1024) and labels.dtype == np.int32
    spec = sample_spec((768, 1024), seed=1)
    assert np.array_equal(image, render_region(spec, 0, 768, 0, 1024))
    full_image, full_labels = sample_image(seed=0)
    assert full_labels.max() >= 2
    assert full_image.shape == (1536, 2048, 3)


# --- TIFF ---------------------------------------------------------------------------------------


def test_write_tiff_round_trip(tmp_path):
    spec = SynthSpec(1100, 900, seed=4, mpp=0.4)
    calls = []
    path = tmp_path / "slide.tif"
    gloms = write_synthetic_tiff(path, spec, tile=256, progress=lambda p: calls.append((p.done, p.total)))
    assert [g.label for g in gloms] == [g.label for g in glomeruli(spec)]
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
        assert page.photometric == tifffile.PHOTOMETRIC.RGB
        assert page.compression == tifffile.COMPRESSION.NONE
        assert page.planarconfig == tifffile.PLANARCONFIG.CONTIG
        assert page.resolutionunit == tifffile.RESUNIT.CENTIMETER
        x_res = page.tags["XResolution"].value
        assert 1e4 / (x_res[0] / x_res[1]) == pytest.approx(spec.mpp, rel=1e-6)
        assert not tif.is_bigtiff
        data = tif.series[0].asarray()
    assert np.array_equal(data, render_region(spec, 0, spec.height, 0, spec.width))
    total = 4 * 5
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == list(range(1, total + 1))
    assert os.listdir(tmp_path) == ["slide.tif"]


def test_write_pyramid_levels(tmp_path):
    spec = SynthSpec(2100, 1300, seed=9, stain="he")
    path = tmp_path / "pyramid.tiff"
    write_synthetic_tiff(path, spec, tile=256, pyramid=True, compression="zlib", bigtiff=True)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
        levels = tif.series[0].levels
        assert [lv.shape for lv in levels] == [(1300, 2100, 3), (650, 1050, 3), (325, 525, 3)]
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        for k, level in enumerate(levels):
            assert level.keyframe.subfiletype == (1 if k else 0)
            expected = render_region(spec, 0, spec.height, 0, spec.width, downsample=2**k)
            assert np.array_equal(level.asarray(), expected)


@pytest.mark.parametrize("side, compression", [(4096, None), (3072, "zlib")])
def test_write_does_not_hold_the_image(tmp_path, side, compression):
    spec = SynthSpec(side, side, seed=2, tissue_fraction=0.4)
    image_bytes = spec.width * spec.height * 3
    render_region(spec, 0, 512, 0, 512)  # warm the per-slide caches outside the measurement
    tracemalloc.start()
    try:
        write_synthetic_tiff(tmp_path / "big.tif", spec, compression=compression)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < image_bytes / 3, f"peak {peak / 1e6:.1f} MB for a {image_bytes / 1e6:.0f} MB image"
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.series[0].shape == (side, side, 3)
        assert np.array_equal(tif.pages[0].asarray()[1000:1300, 2000:2400], render_region(spec, 1000, 1300, 2000, 2400))


def test_cancel_leaves_no_file(tmp_path):
    spec = SynthSpec(2048, 2048, seed=1)
    cancel = threading.Event()
    path = tmp_path / "cancelled.tif"

    def progress(update):
        if update.done >= 3:
            cancel.set()

    with pytest.raises(Cancelled):
        write_synthetic_tiff(path, spec, tile=256, progress=progress, cancel=cancel)
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_bad_tile_size(tmp_path):
    with pytest.raises(ValueError):
        write_synthetic_tiff(tmp_path / "x.tif", SynthSpec(100, 100), tile=100)
    assert os.listdir(tmp_path) == []

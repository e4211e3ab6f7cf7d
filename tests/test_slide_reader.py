"""open_slide on every layout users bring, written here with tifffile/PIL, against numpy truth."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_hubmap.errors import HubmapInputError
from napari_hubmap.progress import Cancelled
from napari_hubmap.slide import open_slide
from napari_hubmap.slide.levels import downsample_mean2

H, W = 1300, 2100  # not multiples of the tile size: edge tiles are padded in the file


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def write(path, data, **kwargs):
    tifffile.imwrite(path, data, **kwargs)
    return path


LAYOUTS = {
    "tiled": lambda p, a: write(p, a, tile=(256, 256), photometric="rgb"),
    "striped": lambda p, a: write(p, a, photometric="rgb", rowsperstrip=7),
    "bigtiff": lambda p, a: write(p, a, tile=(256, 256), photometric="rgb", bigtiff=True),
    "big-endian": lambda p, a: write(p, a, tile=(256, 256), photometric="rgb", byteorder=">"),
    "zlib-tiled": lambda p, a: write(p, a, tile=(256, 256), photometric="rgb", compression="zlib"),
    "jpeg-tiled": lambda p, a: write(p, a, tile=(256, 256), photometric="rgb", compression="jpeg"),
    "lzw-striped": lambda p, a: write(p, a, photometric="rgb", compression="lzw", rowsperstrip=64),
    "planar-tiled": lambda p, a: write(p, np.moveaxis(a, -1, 0), tile=(256, 256), photometric="rgb", planarconfig="separate"),
    "planar-striped": lambda p, a: write(p, np.moveaxis(a, -1, 0), photometric="rgb", planarconfig="separate"),
    "ome-1x1x3": lambda p, a: write(p, np.moveaxis(a, -1, 0)[None, None], metadata={"axes": "TZCYX"}, tile=(256, 256), photometric="minisblack"),
    "planar-1x1x3": lambda p, a: write(p, np.moveaxis(a, -1, 0)[None, None], photometric="rgb", planarconfig="separate"),
    "rgba": lambda p, a: write(p, np.dstack([a, np.full((H, W), 255, np.uint8)]), photometric="rgb", tile=(256, 256)),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_reads_the_same_pixels(tmp_path, rgb, layout):
    path = LAYOUTS[layout](tmp_path / f"{layout}.tif", rgb)
    with open_slide(path) as slide:
        assert (slide.height, slide.width) == (H, W)
        level0 = slide.levels[0]
        assert level0.shape == (H, W, 3) and level0.dtype == np.uint8
        region = level0[100:1100, 300:1900]
        strided = level0[5:1290:7, 11:2090:13]
        full = np.asarray(level0)
    # lossy JPEG: the truth is what tifffile decodes from the whole file
    truth = tifffile.imread(path) if layout == "jpeg-tiled" else rgb
    np.testing.assert_array_equal(region, truth[100:1100, 300:1900])
    np.testing.assert_array_equal(strided, truth[5:1290:7, 11:2090:13])
    np.testing.assert_array_equal(full, truth)


def test_layout_names(tmp_path, rgb):
    expected = {"tiled": "interleaved", "planar-tiled": "planar", "ome-1x1x3": "pages", "striped": "interleaved"}
    for layout, kind in expected.items():
        path = LAYOUTS[layout](tmp_path / f"{layout}.tif", rgb)
        with open_slide(path) as slide:
            assert slide.layout.split(":")[0] == kind, slide.layout


def test_three_single_channel_pages(tmp_path, rgb):
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as writer:
        for channel in range(3):
            writer.write(rgb[..., channel], photometric="minisblack", contiguous=False)
    with open_slide(path) as slide:
        assert slide.layout == "pages:3xYX"
        np.testing.assert_array_equal(slide.levels[0][200:900, 50:2000], rgb[200:900, 50:2000])


def test_pyramidal_ome_tiff_uses_the_file_levels(tmp_path, rgb):
    path = tmp_path / "pyramid.ome.tif"
    levels = [rgb, rgb[::2, ::2], rgb[::4, ::4]]
    with tifffile.TiffWriter(path) as writer:
        writer.write(levels[0], subifds=2, tile=(256, 256), photometric="rgb", metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
        for level in levels[1:]:
            writer.write(level, subfiletype=1, tile=(256, 256), photometric="rgb")
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.25)
        assert slide.cache is None
        assert [lvl.shape[:2] for lvl in slide.levels] == [lvl.shape[:2] for lvl in levels]
        for lazy, truth in zip(slide.levels, levels):
            np.testing.assert_array_equal(lazy[:], truth)


def test_svs_levels_and_mpp(tmp_path, rgb):
    path = tmp_path / "slide.svs"
    description = "Aperio Image Library v12.0.5\n2100x1300 [0,0 2100x1300] (256x256) RAW|AppMag = 20|MPP = 0.4990"
    with tifffile.TiffWriter(path) as writer:
        writer.write(rgb, tile=(256, 256), photometric="rgb", description=description, metadata=None)
        writer.write(rgb[::16, ::16], photometric="rgb", description="Aperio Image Library thumbnail", metadata=None)
        writer.write(rgb[::4, ::4], tile=(256, 256), photometric="rgb", description=description, metadata=None)
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.499)
        assert len(slide.levels) >= 2
        assert slide.levels[1].shape[:2] == rgb[::4, ::4].shape[:2]
        np.testing.assert_array_equal(slide.levels[1][:], rgb[::4, ::4])


def test_mpp_from_resolution_tags(tmp_path, rgb):
    path = write(tmp_path / "res.tif", rgb, tile=(256, 256), photometric="rgb", resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    assert open_slide(path).mpp == pytest.approx(0.5)
    dpi72 = write(tmp_path / "dpi.tif", rgb, photometric="rgb", resolution=(72, 72), resolutionunit="INCH")
    assert open_slide(dpi72).mpp is None  # 352 µm/px: a default, not a scan resolution


def test_grayscale_and_16_bit_warn_and_convert(tmp_path, rgb):
    gray = write(tmp_path / "gray.tif", rgb[..., 0], tile=(256, 256))
    with pytest.warns(UserWarning, match="grayscale"):
        slide = open_slide(gray)
    np.testing.assert_array_equal(slide.levels[0][:10, :10], np.repeat(rgb[:10, :10, :1], 3, axis=2))
    deep = write(tmp_path / "deep.tif", rgb.astype(np.uint16) * 257, tile=(256, 256), photometric="rgb")
    with pytest.warns(UserWarning, match="16-bit"):
        slide = open_slide(deep)
    assert slide.dtype == "uint16"
    np.testing.assert_array_equal(slide.levels[0][:50, :50], rgb[:50, :50])


def test_png_and_jpeg_regions(tmp_path, rgb):
    png = tmp_path / "region.png"
    Image.fromarray(np.dstack([rgb, np.full((H, W), 255, np.uint8)])).save(png)
    with open_slide(png) as slide:
        assert slide.layout == "image:RGBA"
        np.testing.assert_array_equal(slide.levels[0][:], rgb)
        assert slide.levels[1].shape[:2] == ((H + 1) // 2, (W + 1) // 2)
    jpg = tmp_path / "region.jpg"
    Image.fromarray(rgb).save(jpg, quality=95)
    assert open_slide(jpg).levels[0].shape == (H, W, 3)


def test_flat_uncompressed_slide_overview_reads_without_the_cache(tmp_path, rgb):
    path = LAYOUTS["tiled"](tmp_path / "flat.tif", rgb)
    with open_slide(path) as slide:
        assert slide.cache is not None and not slide.cache.complete
        assert [lvl.shape[:2] for lvl in slide.levels] == [(H, W), (650, 1050), (325, 525)]
        np.testing.assert_array_equal(slide.levels[2][:], rgb[::4, ::4])
        np.testing.assert_array_equal(slide.levels[1][:], rgb[::2, ::2])  # nearest neighbour


def test_pyramid_cache_builds_mean_levels_and_is_reused(tmp_path, rgb, isolated_cache):
    big = np.tile(rgb, (2, 2, 1))  # 2600 x 4200: two reduced levels
    path = write(tmp_path / "flat.tif", big, tile=(512, 512), photometric="rgb", compression="zlib")
    with open_slide(path) as slide:
        assert [lvl.shape[:2] for lvl in slide.levels] == [(2600, 4200), (1300, 2100), (650, 1050), (325, 525)]
        # compressed: no cheap overview, so white until the cache is built
        np.testing.assert_array_equal(slide.levels[2][:], 255)
        seen = []
        slide.build_cache(progress=lambda p: seen.append((p.done, p.total)))
        assert seen[-1][0] == seen[-1][1] and len(seen) > 1
        level1 = downsample_mean2(big)
        np.testing.assert_array_equal(slide.levels[1][:], level1)
        np.testing.assert_array_equal(slide.levels[2][:], downsample_mean2(level1))
        np.testing.assert_array_equal(slide.levels[3][:], downsample_mean2(downsample_mean2(level1)))
        final = slide.cache.final
    assert final.parent == isolated_cache and final.is_dir()
    assert not any(p.name.count(".partial") for p in isolated_cache.iterdir())
    with open_slide(path) as again:
        assert again.cache.complete and again.build_cache() is None


def test_background_build_can_be_cancelled_without_leaving_a_cache(tmp_path, rgb, isolated_cache, monkeypatch):
    """Cancel lands part way through the build (at its second cancel check, whatever the machine's speed):
    the build stops there and leaves no cache, complete or partial."""
    from napari_hubmap.slide import pyramid_cache

    big = np.tile(rgb, (4, 4, 1))
    path = write(tmp_path / "flat.tif", big, tile=(512, 512), photometric="rgb", compression="zlib")
    slide = open_slide(path)
    checks = []

    def cancel_at_the_second_check(event, message):
        checks.append(message)
        if len(checks) == 2:
            event.set()
        return real_check(event, message)

    real_check = pyramid_cache.check_cancelled
    monkeypatch.setattr(pyramid_cache, "check_cancelled", cancel_at_the_second_check)
    state = slide.cache.start_build(slide.reopen)
    state.thread.join(60)
    assert state.finished and isinstance(state.error, Cancelled)
    assert len(checks) == 2 and 0 < state.done < state.total  # stopped part way, at once
    assert not slide.cache.complete
    assert list(isolated_cache.iterdir()) == []


def test_background_build_reports_progress_and_completes(tmp_path, rgb):
    path = write(tmp_path / "flat.tif", np.tile(rgb, (2, 2, 1)), tile=(512, 512), photometric="rgb")
    slide = open_slide(path, build_cache=True)
    state = slide.cache.build_state
    state.thread.join(120)
    assert state.error is None and state.fraction == 1.0
    assert slide.cache.complete


# ---- bad input: one clear error naming the file -------------------------------------------------


def test_missing_empty_and_garbage_files(tmp_path):
    with pytest.raises(HubmapInputError, match="not found"):
        open_slide(tmp_path / "nope.tif")
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(HubmapInputError, match="empty"):
        open_slide(empty)
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"this is not a tiff at all" * 10)
    with pytest.raises(HubmapInputError, match="garbage.tif: not a readable TIFF"):
        open_slide(garbage)
    png = tmp_path / "bad.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(HubmapInputError, match="bad.png"):
        open_slide(png)


def test_truncated_tiff_is_reported_at_open(tmp_path, rgb):
    path = LAYOUTS["tiled"](tmp_path / "cut.tif", rgb)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(HubmapInputError, match="cut.tif: .*truncated"):
        open_slide(path)


def test_truncated_header_is_reported(tmp_path, rgb):
    path = LAYOUTS["tiled"](tmp_path / "head.tif", rgb)
    path.write_bytes(path.read_bytes()[:12])
    with pytest.raises(HubmapInputError, match="head.tif"):
        open_slide(path)


@pytest.mark.parametrize(
    "data, kwargs, message",
    [
        (np.zeros((64, 64, 3), np.float32), {"photometric": "rgb"}, "float32"),
        (np.zeros((64, 64, 3), np.int16), {"photometric": "rgb"}, "int16"),
        (np.zeros((64, 64, 6), np.uint8), {"photometric": "minisblack", "planarconfig": "contig"}, "6 samples"),
    ],
)
def test_unsupported_sample_types(tmp_path, data, kwargs, message):
    path = write(tmp_path / "odd.tif", data, **kwargs)
    with pytest.raises(HubmapInputError, match=f"odd.tif: .*{message}"):
        open_slide(path)


def test_zero_size_image(tmp_path):
    path = write(tmp_path / "zero.tif", np.zeros((4, 4, 3), np.uint8), photometric="rgb")
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(0)
    with pytest.raises(HubmapInputError, match="zero.tif"):
        open_slide(path)

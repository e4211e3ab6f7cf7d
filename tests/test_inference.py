"""Tiled ensemble inference: seamless blending, exact TTA, ensembles, resume, cancel, tissue skipping."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_hubmap.errors import HubmapInputError
from napari_hubmap.inference import InferenceConfig, predict_slide
from napari_hubmap.stores.probability import open_probability, read_progress
from napari_hubmap.inference.tta import DIHEDRAL, apply, invert, resolve_tta
from napari_hubmap.progress import Cancelled
from napari_hubmap.registry import LoadedModel, ModelCard, build_module, save_model
from napari_hubmap.synth import SynthSpec, write_synthetic_tiff

NORMALISATION = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "max_pixel_value": 255.0}


def conv_model(seed: int, downscale: float = 1.0, tile: int = 128, overlap: int = 64) -> LoadedModel:
    """A fully convolutional toy (receptive field 9 px) with a real card."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 5, padding=2), torch.nn.Tanh(), torch.nn.Conv2d(6, 1, 5, padding=2))
    card = ModelCard(name=f"toy{seed}", architecture="Unet", encoder="tu-test_resnet", downscale=downscale, tile=tile,
                     overlap=overlap, normalization=NORMALISATION)
    return LoadedModel(card, net.eval(), Path(f"toy{seed}"))


def whole_image_probability(model: LoadedModel, image: np.ndarray) -> np.ndarray:
    x = (image.astype(np.float32) / 255.0 - 0.5) / 0.25
    with torch.inference_mode():
        out = model.module(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))
    return torch.sigmoid(out)[0, 0].numpy()


@pytest.fixture(scope="module")
def noise_slide(tmp_path_factory):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (700, 900, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("slides") / "noise.tif"
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb")
    return path, image


@pytest.fixture(scope="module")
def synth_slide(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "synth.tif"
    write_synthetic_tiff(path, SynthSpec(width=1536, height=1024, seed=3, tissue_fraction=0.5))
    return path


def run(slide, out, models, **config) -> tuple:
    config.setdefault("skip_background", False)
    result = predict_slide(slide, out, InferenceConfig(**config), models=models)
    return result, np.asarray(open_probability(out)[0][0][:])


@pytest.mark.parametrize("blend", ["gaussian", "centre"])
def test_tiled_blend_equals_one_whole_image_pass(tmp_path, noise_slide, blend):
    path, image = noise_slide
    model = conv_model(1)
    result, prob = run(path, tmp_path / "p.zarr", [model], blend=blend, batch=3)
    assert result.complete and result.computed == result.tiles
    truth = np.rint(whole_image_probability(model, image) * 255)
    diff = np.abs(prob.astype(int) - truth)
    margin = model.card.overlap // 2
    assert diff[margin:-margin, margin:-margin].max() <= 2
    # no seam: on the columns where tiles start or end the error is, on average, no larger than on the
    # other columns (disjoint sets; a blend that weighs tile edges wrongly raises the first)
    starts = [s for s in range(0, 900 - 128, 64)] + [900 - 128]
    edges = {c for s in starts for c in (s, s + 127)}
    columns = np.arange(margin, 900 - margin)
    on_edge = np.isin(columns, sorted(edges))
    rows = diff[margin:-margin]
    assert on_edge.any() and (~on_edge).any()
    assert rows[:, columns[on_edge]].mean() <= rows[:, columns[~on_edge]].mean() + 0.25


def test_every_tta_transform_inverts_exactly():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    seen = set()
    for name in DIHEDRAL:
        moved = apply(name, x)
        assert torch.equal(invert(name, moved), x), name
        seen.add(moved.numpy().tobytes())
    assert len(seen) == 8  # eight distinct transforms
    assert resolve_tta("d4") == tuple(DIHEDRAL) and len(resolve_tta("flips")) == 4
    with pytest.raises(ValueError):
        resolve_tta("sideways")


def test_tta_of_an_equivariant_model_changes_nothing(tmp_path, noise_slide):
    """A 1x1-conv model commutes with flips/rotations, so d4 TTA must give the plain result."""
    path, _ = noise_slide
    torch.manual_seed(0)
    card = ModelCard(name="pointwise", architecture="Unet", encoder="tu-test_resnet", downscale=1.0, tile=128, overlap=32, normalization=NORMALISATION)
    model = LoadedModel(card, torch.nn.Conv2d(3, 1, 1).eval(), Path("pointwise"))
    _, plain = run(path, tmp_path / "a.zarr", [model])
    _, d4 = run(path, tmp_path / "b.zarr", [model], tta="d4")
    assert np.abs(plain.astype(int) - d4).max() <= 1


def test_ensemble_is_the_mean_of_its_members(tmp_path, noise_slide):
    path, _ = noise_slide
    first, second = conv_model(1), conv_model(2)
    _, a = run(path, tmp_path / "a.zarr", [first])
    _, b = run(path, tmp_path / "b.zarr", [second])
    _, both = run(path, tmp_path / "ab.zarr", [first, second])
    assert np.abs(both.astype(float) - (a.astype(float) + b) / 2).max() <= 1.0


def test_models_at_different_scales_land_on_one_grid(tmp_path, noise_slide):
    path, _ = noise_slide
    fine, coarse = conv_model(1, downscale=1.0), conv_model(2, downscale=2.0, tile=64, overlap=32)
    result, prob = run(path, tmp_path / "mixed.zarr", [fine, coarse])
    assert prob.shape == (700, 900)
    _, coarse_only = run(path, tmp_path / "coarse.zarr", [coarse])
    assert coarse_only.shape == (350, 450)
    levels, meta = open_probability(tmp_path / "mixed.zarr")
    assert meta["downscale"] == 1.0 and len(meta["models"]) == 2 and levels[0].shape == (700, 900)


def test_resume_gives_byte_identical_output(tmp_path, synth_slide):
    model = conv_model(3, tile=96, overlap=32)
    config = {"batch": 2, "skip_background": True}
    _, whole = run(synth_slide, tmp_path / "whole.zarr", [model], **config)
    cancel = threading.Event()
    events = []

    def stop_after_some_rows(progress):
        events.append(progress)
        if progress.details["rows_done"] >= 512:
            cancel.set()

    out = tmp_path / "resumed.zarr"
    with pytest.raises(Cancelled):  # not complete
        predict_slide(synth_slide, out, InferenceConfig(**config), progress=stop_after_some_rows, cancel=cancel, models=[model])
    done_after_first = read_progress(out)["rows_done"]
    assert 0 < done_after_first < 1024
    partial = np.asarray(open_probability(out)[0][0][:])  # readable after cancel
    assert partial.shape == whole.shape
    second = predict_slide(synth_slide, out, InferenceConfig(**config), models=[model])
    assert second.complete and second.resumed_rows == done_after_first
    total_computed = predict_slide(synth_slide, tmp_path / "again.zarr", InferenceConfig(**config), models=[model]).computed
    assert second.computed < total_computed  # finished rows were not computed again
    levels, _ = open_probability(out)
    whole_levels, _ = open_probability(tmp_path / "whole.zarr")
    for resumed_level, whole_level in zip(levels, whole_levels):
        assert np.asarray(resumed_level[:]).tobytes() == np.asarray(whole_level[:]).tobytes()


def test_cancel_mid_run_leaves_a_readable_partial_store(tmp_path, synth_slide):
    cancel = threading.Event()
    out = tmp_path / "cancelled.zarr"
    seen = []

    def stop(progress):
        seen.append(progress)
        cancel.set()

    with pytest.raises(Cancelled):  # not complete
        predict_slide(synth_slide, out, InferenceConfig(batch=1), progress=stop, cancel=cancel, models=[conv_model(4, tile=64, overlap=16)])
    assert len(seen) == 1 and seen[0].done >= 1  # stopped after the batch that was under way
    levels, meta = open_probability(out)
    assert levels[0].shape == (1024, 1536) and meta["progress"]["complete"] is False


def test_skipped_tiles_are_exactly_those_off_the_tissue_mask(tmp_path, synth_slide):
    from napari_hubmap.inference.engine import plan_slide
    from napari_hubmap.slide import open_slide

    model = conv_model(5, tile=128, overlap=32)
    with open_slide(synth_slide) as slide:
        plan = plan_slide(slide, [model], InferenceConfig())
    mask = plan.tissue
    assert 0.2 < mask.fraction < 0.9
    for job in plan.jobs:
        touches = mask.any_in(job.y, job.y + 128, job.x, job.x + 128)
        assert job.skipped == (not touches)
    assert 0 < plan.skipped < len(plan.jobs)
    result, prob = run(synth_slide, tmp_path / "t.zarr", [model], skip_background=True)
    assert result.skipped == plan.skipped and result.computed == len(plan.jobs) - plan.skipped
    # a pixel covered only by skipped tiles stays 0
    only_skipped = np.ones(prob.shape, bool)
    for job in plan.jobs:
        if not job.skipped:
            only_skipped[job.out_y0 : job.out_y1, job.out_x0 : job.out_x0 + job.out_size] = False
    assert only_skipped.any() and prob[only_skipped].max() == 0


def test_real_smp_model_from_the_registry(tmp_path, synth_slide, monkeypatch):
    card = ModelCard(name="tiny-unet", architecture="Unet", encoder="tu-test_resnet",
                     architecture_kwargs={"encoder_depth": 3, "decoder_channels": [16, 8, 4]}, downscale=2.0, tile=64, overlap=16)
    save_model(build_module(card), card, tmp_path / "models" / "tiny-unet")
    monkeypatch.setenv("NAPARI_HUBMAP_MODELS", str(tmp_path / "models"))
    result = predict_slide(synth_slide, tmp_path / "s.prob.zarr", InferenceConfig(models=["tiny-unet"], tta="flips", batch=4))
    levels, meta = open_probability(tmp_path / "s.prob.zarr")
    assert result.complete and levels[0].shape == (512, 768) and meta["models"][0]["name"] == "tiny-unet"


def test_bad_model_names_and_settings_are_clear_errors(tmp_path, synth_slide, monkeypatch):
    monkeypatch.setenv("NAPARI_HUBMAP_MODELS", str(tmp_path))
    with pytest.raises(HubmapInputError, match="no-such-model"):
        predict_slide(synth_slide, tmp_path / "x.zarr", InferenceConfig(models=["no-such-model"]))
    with pytest.raises(HubmapInputError, match="overlap"):
        predict_slide(synth_slide, tmp_path / "x.zarr", InferenceConfig(overlap=200, tile=128), models=[conv_model(1)])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "card.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(HubmapInputError, match="card.json"):
        predict_slide(synth_slide, tmp_path / "x.zarr", InferenceConfig(models=[str(broken)]))


def test_compressed_flat_slide_is_not_mistaken_for_background(tmp_path):
    """Its overview levels are white until the pyramid cache exists: the engine builds it first."""
    path = tmp_path / "zlib.tif"
    from napari_hubmap.synth import render_region

    spec = SynthSpec(width=2600, height=1400, seed=2)
    tifffile.imwrite(path, render_region(spec, 0, 1400, 0, 2600), tile=(256, 256), photometric="rgb", compression="zlib")
    result, _ = run(path, tmp_path / "z.zarr", [conv_model(1, tile=128, overlap=32)], skip_background=True)
    assert result.computed > 0 and result.skipped < result.tiles


@pytest.mark.parametrize("factor", [2, 3, 4, 6, 8])
def test_fast_integer_shrinks_equal_the_rounded_area_mean(factor):
    """The 2x shortcut and OpenCV's area resize (larger whole factors) give numpy's k x k mean rounded half
    to even, to the grey level: random pixels make thousands of exact halves."""
    from napari_hubmap.inference.tile_reader import resize_rgb

    size = 96
    tile = np.random.default_rng(factor).integers(0, 256, (size * factor, size * factor, 3), dtype=np.uint8)
    expected = tile.reshape(size, factor, size, factor, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    np.testing.assert_array_equal(resize_rgb(tile, size), expected)


def test_forward_batch_splits_calls_without_changing_the_map(tmp_path, noise_slide):
    path, _ = noise_slide
    model = conv_model(2)
    sizes = []
    model.module.register_forward_hook(lambda module, args, out: sizes.append(args[0].shape[0]))
    _, whole = run(path, tmp_path / "a.zarr", [model], batch=4, forward_batch=4, backend="torch")  # hooks see torch
    assert max(sizes) == 4
    sizes.clear()
    _, split = run(path, tmp_path / "b.zarr", [model], batch=4, forward_batch=1, backend="torch")
    assert set(sizes) == {1}
    assert np.abs(whole.astype(int) - split).max() <= 1


def test_cpu_forwards_one_tile_at_a_time_by_default():
    from napari_hubmap.inference.engine import forward_batch_size

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert forward_batch_size(InferenceConfig(batch=8), cpu) == 1
    assert forward_batch_size(InferenceConfig(batch=8), cuda) == 8
    assert forward_batch_size(InferenceConfig(batch=8, forward_batch=3), cpu) == 3
    with pytest.raises(HubmapInputError, match="forward_batch"):
        forward_batch_size(InferenceConfig(forward_batch=0), cpu)


def test_new_default_threshold_keeps_the_map_but_new_tiles_restart_it(tmp_path, synth_slide):
    model = conv_model(5, tile=96, overlap=32)
    out = tmp_path / "p.zarr"
    first = predict_slide(synth_slide, out, InferenceConfig(batch=2), models=[model])
    assert first.complete
    _, meta = open_probability(out)
    assert meta["slide_shape"] == [1024, 1536] and meta["models"][0]["threshold"] == model.card.threshold
    model.card = model.card.replace(threshold=0.3)
    again = predict_slide(synth_slide, out, InferenceConfig(batch=2), models=[model])
    assert again.computed == 0 and again.resumed_rows == first_rows(out)
    restarted = predict_slide(synth_slide, out, InferenceConfig(batch=2, overlap=16), models=[model])
    assert restarted.resumed_rows == 0 and restarted.computed > 0


def first_rows(out) -> int:
    return read_progress(out)["rows_done"]


def test_row_bands_in_any_order_make_the_whole_run_byte_for_byte(tmp_path):
    from napari_hubmap.inference.engine import finish_bands, prepare_bands

    slide = tmp_path / "tall.tif"
    write_synthetic_tiff(slide, SynthSpec(width=900, height=2300, seed=4, tissue_fraction=0.6))
    model = conv_model(1, tile=128, overlap=32)
    config = InferenceConfig(backend="torch")
    predict_slide(slide, tmp_path / "whole.zarr", config, models=[model])
    bands = prepare_bands(slide, tmp_path / "bands.zarr", config, band_rows=700, models=[model])
    assert bands == [(0, 512), (512, 1024), (1024, 1536), (1536, 2048), (2048, 2300)]
    for band in bands[::-2]:  # some bands, last first
        predict_slide(slide, tmp_path / "bands.zarr", config, models=[model], band=band)
    with pytest.raises(RuntimeError, match="not finished"):
        finish_bands(tmp_path / "bands.zarr", bands)
    assert not read_progress(tmp_path / "bands.zarr")["complete"]
    for band in bands[-2::-2]:
        predict_slide(slide, tmp_path / "bands.zarr", config, models=[model], band=band)
    finish_bands(tmp_path / "bands.zarr", bands)
    whole, banded = open_probability(tmp_path / "whole.zarr")[0], open_probability(tmp_path / "bands.zarr")[0]
    assert len(whole) == len(banded) > 1
    for a, b in zip(whole, banded):
        assert np.array_equal(np.asarray(a[:]), np.asarray(b[:]))
    assert read_progress(tmp_path / "bands.zarr")["complete"]
    again = predict_slide(slide, tmp_path / "bands.zarr", config, models=[model], band=bands[0])
    assert again.computed == 0  # a finished band is not redone


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_real_smp_unet_tiled_equals_its_whole_image_pass(tmp_path, backend):
    """A real segmentation-models-pytorch Unet, saved and loaded through the registry, on a slide of 3 x 4
    tiles: the blended tiled map equals one pass over the whole image (mean 0.015, at most 4 grey levels
    measured: the network's context beyond the overlap), on a map that varies (std > 10 grey levels)."""
    from test_registry import TINY_UNET

    path = tmp_path / "slide.tif"
    write_synthetic_tiff(path, SynthSpec(width=768, height=640, seed=3, tissue_fraction=0.9))
    image = tifffile.imread(path)[..., :3]
    card = ModelCard(name="smp", architecture="Unet", encoder="tu-test_resnet", architecture_kwargs=dict(TINY_UNET),
                     tile=256, overlap=64, normalization=NORMALISATION, downscale=1.0)
    torch.manual_seed(0)
    module = build_module(card).eval()
    with torch.no_grad():  # sharper logits, so the map is far from flat
        module.segmentation_head[0].weight.mul_(40)
        module.segmentation_head[0].bias.zero_()
    folder = save_model(module, card, tmp_path / "models" / "smp")
    result = predict_slide(path, tmp_path / "p.zarr", InferenceConfig(models=[str(folder)], skip_background=False,
                                                                      backend=backend))
    assert result.complete and result.tiles == 12  # 3 rows x 4 columns of 256 px tiles at a stride of 192
    prob = np.asarray(open_probability(tmp_path / "p.zarr")[0][0][:]).astype(int)
    truth = np.rint(whole_image_probability(LoadedModel(card, module, folder), image) * 255).astype(int)
    diff = np.abs(prob - truth)
    assert truth.std() > 10
    assert diff.mean() <= 0.1 and np.percentile(diff, 99) <= 1 and diff.max() <= 6, (diff.mean(), diff.max())

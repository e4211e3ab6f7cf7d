"""Batch-norm statistics measured on each slide (AdaBN, ``predict --adapt-norm``): the statistics are the slide's own,
the model itself is left alone, a slide whose colours are shifted and scaled gives back the original's map, and the
store's resume key follows the statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_hubmap.inference import InferenceConfig, predict_slide
from napari_hubmap.inference.adapt import adaptation_tiles, adapted_module, norm_layers, statistics_digest
from napari_hubmap.registry import LoadedModel, ModelCard
from napari_hubmap.stores.probability import open_probability
from napari_hubmap.synth import sample_image

from test_inference import NORMALISATION


def bn_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 6, 5, padding=2), torch.nn.BatchNorm2d(6), torch.nn.Tanh(),
                               torch.nn.Conv2d(6, 1, 5, padding=2)).eval()


def test_the_statistics_are_the_mean_of_each_batchs_own_and_the_model_is_left_alone():
    net = bn_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batches = [torch.randn(4, 3, 32, 32) * 3 + 1, torch.randn(2, 3, 32, 32) * 0.5 - 2]
    adapted = adapted_module(net, iter(batches))
    features = [net[0](b) for b in batches]
    with torch.no_grad():
        mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in features]).mean(0)
        var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in features]).mean(0)
    layer = adapted[1]
    assert torch.allclose(layer.running_mean, mean, atol=1e-4) and torch.allclose(layer.running_var, var, rtol=1e-4)
    assert not adapted.training and not layer.training and layer.momentum == net[1].momentum
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the loaded model is untouched
    assert torch.equal(adapted[0].weight, net[0].weight)  # no learnt weight changes
    assert statistics_digest(adapted) != statistics_digest(net)


class EncoderDecoder(torch.nn.Module):
    """An encoder of two stages (full size, then half) and a decoder, each with batch norm, as smp's models hold them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.encoder = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
            torch.nn.Conv2d(4, 4, 3, stride=2, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
        self.decoder = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2), torch.nn.Conv2d(4, 4, 3, padding=1),
                                           torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 1, 1))

    def forward(self, x):
        return self.decoder(self.encoder(x))


@pytest.mark.parametrize("max_stride, changed", [(1, [True, False, False]), (2, [True, True, False]),
                                                 (None, [True, True, True])])
def test_the_depth_limit_adapts_only_the_encoders_fine_layers(max_stride, changed):
    """``max_stride`` S: the encoder's layers whose input is at most S times coarser than the tile; the decoder's
    never (unless every layer is adapted)."""
    net = EncoderDecoder().eval()
    adapted = adapted_module(net, iter([torch.randn(2, 3, 16, 16) * 2 + 3]), max_stride)
    moved = [not torch.equal(a.running_mean, b.running_mean) for a, b in zip(norm_layers(adapted), norm_layers(net))]
    assert moved == changed
    assert all(not layer.training for layer in norm_layers(adapted))


def test_a_network_without_batch_norm_or_without_tissue_is_given_back_as_it_is():
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 3)).eval()
    assert not norm_layers(plain) and adapted_module(plain, iter([torch.zeros(1, 3, 8, 8)])) is plain
    net = bn_net()
    assert adapted_module(net, iter([])) is net


def test_tiles_are_spread_over_the_whole_slide():
    jobs = list(range(100))
    picked = adaptation_tiles(jobs, 5)
    assert picked == [0, 25, 50, 74, 99] and adaptation_tiles(jobs[:3], 5) == [0, 1, 2] and adaptation_tiles([]) == []


def fitted_model(image: np.ndarray) -> LoadedModel:
    """A toy with batch norm whose statistics were measured on ``image`` (as training would have), its output
    layer steep enough that a shift of its features moves the map."""
    net = bn_net(1)
    x = torch.from_numpy(((image.astype(np.float32) / 255 - 0.5) / 0.25).transpose(2, 0, 1)[None].copy())
    net = adapted_module(net, iter([x]))
    with torch.no_grad():
        net[3].weight *= 4
    card = ModelCard(name="bn-toy", architecture="Unet", encoder="tu-test_resnet", downscale=1.0, tile=128, overlap=32,
                     normalization=NORMALISATION)
    return LoadedModel(card, net, Path("bn-toy"))


def map_of(tmp_path: Path, name: str, image: np.ndarray, model: LoadedModel, adapt: bool) -> tuple[np.ndarray, object]:
    slide = tmp_path / f"{name}.tif"
    if not slide.exists():
        tifffile.imwrite(slide, image, photometric="rgb")
    out = tmp_path / f"{name}.zarr"
    result = predict_slide(slide, out, InferenceConfig(skip_background=False, adapt_norm=adapt), models=[model])
    return np.asarray(open_probability(out)[0][0][:]).astype(int), result


def test_a_slide_stained_lighter_and_weaker_gets_back_the_originals_map(tmp_path):
    """Tissue colours scaled and shifted (one affine change of every channel): the conv's features move by a
    scale and a shift per channel, which the slide's own statistics take out again; without them the maps differ."""
    image = sample_image((320, 448), seed=5, stain="pas")[0]
    faded = (image.astype(np.float32) * 0.7 + 40).round().astype(np.uint8)
    model = fitted_model(image)
    plain = np.abs(map_of(tmp_path, "o", image, model, False)[0] - map_of(tmp_path, "f", faded, model, False)[0]).mean()
    adapted = np.abs(map_of(tmp_path, "oa", image, model, True)[0] - map_of(tmp_path, "fa", faded, model, True)[0]).mean()
    assert plain > 20 and adapted < plain / 10, (adapted, plain)  # measured 1.2 against 54 grey levels


def test_the_store_records_the_statistics_and_a_run_with_other_ones_is_redone(tmp_path):
    image = sample_image((256, 320), seed=6, stain="pas")[0]
    model = fitted_model(image)
    first = map_of(tmp_path, "s", image, model, True)[1]
    recorded = open_probability(tmp_path / "s.zarr")[1]["models"][0]
    assert len(recorded["norm_statistics"]) == 16 and first.backend == "torch" and first.computed > 0
    again = map_of(tmp_path, "s", image, model, True)[1]
    assert again.computed == 0 and again.complete  # the same statistics: the finished map is kept
    plain = map_of(tmp_path, "s", image, model, False)[1]
    assert plain.computed > 0  # without adaptation the map is made again, not mixed with the adapted one
    assert "norm_statistics" not in open_probability(tmp_path / "s.zarr")[1]["models"][0]


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_an_onnx_backend_asked_for_by_name_is_one_error(tmp_path, backend):
    pytest.importorskip("onnxruntime")
    from napari_hubmap.errors import HubmapInputError

    image = sample_image((128, 128), seed=7, stain="pas")[0]
    tifffile.imwrite(tmp_path / "x.tif", image, photometric="rgb")
    with pytest.raises(HubmapInputError, match="adapt"):
        predict_slide(tmp_path / "x.tif", tmp_path / "x.zarr", InferenceConfig(adapt_norm=True, backend=backend),
                      models=[fitted_model(image)])
    assert not (tmp_path / "x.zarr").exists()

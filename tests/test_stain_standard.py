"""Stain standardisation: a slide's tissue colour moved onto the model card's reference, in training and in
prediction, so that a pale section of another lab reaches the network as the colours the model learnt."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_hubmap.errors import HubmapInputError
from napari_hubmap.inference import InferenceConfig, predict_slide
from napari_hubmap.registry import ModelCard, load_model
from napari_hubmap.stain_standard import LabStats, mean_stats, standardise, tissue_pixels, tissue_stats, to_lab
from napari_hubmap.stores.probability import open_probability
from napari_hubmap.synth import sample_image
from napari_hubmap.training import TrainConfig, train

from test_inference import conv_model, whole_image_probability
from training_data import write_disc_folder

HUBMAP_LIKE = LabStats((50.5, 32.4, -26.1), (15.2, 13.0, 9.9))
"""About the tissue colour of HuBMAP's PAS tiles (deep purple)."""


def pale(image: np.ndarray) -> np.ndarray:
    """The same section as a lab with a lighter, weaker stain would show it: tissue lighter and less saturated
    (an affine change of L*, a*, b*, as Reinhard's transfer assumes), glass untouched."""
    return standardise(image, tissue_stats(image), LabStats((70.0, 12.0, -8.0), (10.0, 6.0, 5.0)))


@pytest.fixture(scope="module")
def section():
    """A synthetic PAS section, as deep purple as HuBMAP's."""
    image = sample_image((384, 512), seed=4, stain="pas")[0]
    return standardise(image, tissue_stats(image), HUBMAP_LIKE)


def test_tissue_moves_onto_the_reference_and_glass_keeps_its_colour():
    section = sample_image((384, 512), seed=4, stain="pas")[0]
    moved = standardise(section, tissue_stats(section), HUBMAP_LIKE)
    after = tissue_stats(moved)
    assert np.allclose(after.mean, HUBMAP_LIKE.mean, atol=1.5), after
    assert np.allclose(after.std, HUBMAP_LIKE.std, rtol=0.2), after  # sRGB's gamut clips the most saturated purples
    glass = ~tissue_pixels(to_lab(section))
    assert 0.05 < glass.mean() < 0.95  # the section has both
    assert np.array_equal(moved[glass], section[glass])
    assert np.abs(moved[~glass].astype(int) - section[~glass]).mean() > 5  # the tissue did change colour
    assert standardise(section, None, HUBMAP_LIKE) is section and standardise(section, after, None) is section


def test_a_pale_copy_comes_back_to_the_colours_of_the_original(section):
    faded = pale(section)
    assert tissue_stats(faded).mean[0] > tissue_stats(section).mean[0] + 10  # much lighter
    back = standardise(faded, tissue_stats(faded), tissue_stats(section))
    tissue = tissue_pixels(to_lab(section))
    assert np.abs(back[tissue].astype(int) - section[tissue]).mean() < 4


def test_glass_alone_has_no_statistics_and_is_left_alone():
    glass = np.full((64, 64, 3), 243, np.uint8)
    assert tissue_stats(glass) is None and mean_stats([None, None]) is None
    assert standardise(glass, tissue_stats(glass), HUBMAP_LIKE) is glass


def write_slide(path, image):
    tifffile.imwrite(path, image, photometric="rgb")
    return path


def map_of(tmp_path, name, image, model) -> np.ndarray:
    slide = write_slide(tmp_path / f"{name}.tif", image)
    predict_slide(slide, tmp_path / f"{name}.zarr", InferenceConfig(skip_background=False), models=[model])
    return np.asarray(open_probability(tmp_path / f"{name}.zarr")[0][0][:]).astype(int)


def test_prediction_moves_each_slide_onto_the_cards_reference(tmp_path, section):
    """With a reference, the pale copy's map is the original's (the network sees the same colours), and each
    is what one pass over the whole image moved by its own statistics gives; without one the two differ."""
    base = conv_model(3, tile=128, overlap=32)
    model = type(base)(base.card.replace(stain_reference=HUBMAP_LIKE.as_dict()), base.module, base.path)
    faded = pale(section)
    original, copy = map_of(tmp_path, "original", section, model), map_of(tmp_path, "pale", faded, model)
    oracle = whole_image_probability(model, standardise(faded, tissue_stats(faded), HUBMAP_LIKE)) * 255
    assert np.abs(copy - oracle).mean() < 1.5
    plain_original, plain_copy = map_of(tmp_path, "o-plain", section, base), map_of(tmp_path, "p-plain", faded, base)
    with_reference, without = np.abs(original - copy).mean(), np.abs(plain_original - plain_copy).mean()
    assert without > 2 and with_reference < without / 5, (with_reference, without)  # measured 0.2 against 3.7


def test_training_records_the_training_images_mean_colour_and_a_retrain_keeps_it(tmp_path):
    data = write_disc_folder(tmp_path / "discs")
    config = TrainConfig(preset="effnet-unet", tile=64, infer_tile=64, epochs=1, samples_per_epoch=8, batch=4,
                         workers=0, val_groups=["pC"], thresholds=[0.5], stain_standardise=True,
                         target_mpp=2.0)  # the discs' own scale: the reference is of the images as they are
    first = train(config, [data], tmp_path / "first")
    card = load_model(first.model).card
    trained = [p for p in sorted((data / "images").glob("*.png")) if not p.stem.startswith("pC")]
    from PIL import Image

    expected = mean_stats(tissue_stats(np.asarray(Image.open(p).convert("RGB"))) for p in trained)
    assert np.allclose(card.stain_reference["lab_mean"], expected.mean, atol=1e-3)
    assert np.allclose(card.stain_reference["lab_std"], expected.std, atol=1e-3)
    plain = train(config.replace(stain_standardise=False), [data], tmp_path / "plain")
    assert load_model(plain.model).card.stain_reference is None
    again = train(config.replace(stain_standardise=False, preset=None, base=str(first.model)),
                  [write_disc_folder(tmp_path / "other", seed=5)], tmp_path / "second")
    assert load_model(again.model).card.stain_reference == card.stain_reference


@pytest.mark.parametrize("value", [{"lab_mean": [50, 30, -20]}, {"lab_mean": [50, 30], "lab_std": [1, 1, 1]},
                                   {"lab_mean": [50, 30, -20], "lab_std": [1, 0, 1]}, "purple"])
def test_a_bad_reference_in_a_card_is_one_error_naming_the_field(tmp_path, value):
    card = json.loads(ModelCard(name="m", architecture="Unet", encoder="tu-test_resnet").to_json())
    card["stain_reference"] = value
    with pytest.raises(HubmapInputError, match="stain_reference"):
        ModelCard.from_json(json.dumps(card), tmp_path / "card.json")

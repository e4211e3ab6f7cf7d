"""A model card's test-time augmentation picks: checked and round-tripped by the card, picked on the validation images
by the trainer from the averaged predictions (exactly inverted, as the engine averages tiles), and recorded by
predict for the preset it runs, so post-processing cuts a flip-averaged map at the flips' own threshold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_hubmap.errors import HubmapInputError
from napari_hubmap.inference import InferenceConfig, predict_slide
from napari_hubmap.inference.tta import PRESETS, card_picks
from napari_hubmap.postprocess.slide import recorded_defaults
from napari_hubmap.registry import LoadedModel, ModelCard
from napari_hubmap.stores.probability import open_probability
from napari_hubmap.training.validate import predict_image

NORMALISATION = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "max_pixel_value": 255.0}
FLIPS = {"threshold": 0.45, "outline_threshold": None}
D4 = {"threshold": 0.4, "outline_threshold": 0.3}


def card(**fields) -> ModelCard:
    return ModelCard(name="toy", architecture="Unet", encoder="tu-test_resnet", normalization=NORMALISATION,
                     threshold=0.9, outline_threshold=0.7, **fields)


def test_card_round_trips_the_picks_and_old_cards_have_none():
    made = card(tta_picks={"flips": FLIPS, "d4": D4})
    again = ModelCard.from_json(made.to_json())
    assert again == made and again.tta_picks["d4"] == {"threshold": 0.4, "outline_threshold": 0.3}
    old = json.loads(made.to_json())
    del old["tta_picks"]  # a card written before the field existed
    assert ModelCard.from_json(json.dumps(old)).tta_picks == {}


@pytest.mark.parametrize("bad", [{"threshold": 1.5, "outline_threshold": None}, {"threshold": 0.5},
                                 {"threshold": "0.5", "outline_threshold": None}, 0.5,
                                 {"threshold": 0.5, "outline_threshold": -1}, {"threshold": None, "outline_threshold": None},
                                 {"threshold": 0.5, "outline_threshold": None, "grow": 2}])
def test_a_bad_pick_is_a_card_error_naming_file_and_field(bad):
    text = json.loads(card().to_json())
    text["tta_picks"] = {"flips": bad}
    with pytest.raises(HubmapInputError, match=r"card field 'tta_picks.flips") as error:
        ModelCard.from_json(json.dumps(text), source="models/toy/card.json")
    assert "models/toy/card.json" in str(error.value)


def test_a_preset_runs_at_its_pick_and_anything_else_at_the_one_pass_picks():
    picked = card(tta_picks={"flips": FLIPS, "d4": D4})
    assert card_picks(picked, PRESETS["none"]) == (0.9, 0.7)
    assert card_picks(picked, PRESETS["flips"]) == (0.45, None)
    assert card_picks(picked, tuple(reversed(PRESETS["flips"]))) == (0.45, None)  # the same transforms, any order
    assert card_picks(picked, PRESETS["d4"]) == (0.4, 0.3)
    assert card_picks(picked, ("identity", "hflip")) == (0.9, 0.7)  # no pick for this list
    assert card_picks(card(tta_picks={"d4": D4}), PRESETS["flips"]) == (0.9, 0.7)  # none for flips
    assert card_picks(card(tta_picks={"flips": FLIPS}), ("hflip",)) == (0.9, 0.7)  # one pass, whichever


def test_predict_records_the_pick_of_its_tta_and_postprocess_cuts_there(tmp_path):
    slide = tmp_path / "s.tif"
    tifffile.imwrite(slide, np.random.default_rng(0).integers(0, 256, (96, 128, 3), np.uint8), photometric="rgb")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 3, padding=1)).eval()
    model = LoadedModel(card(downscale=2.0, tile=64, overlap=16, tta_picks={"flips": FLIPS}), net, Path("toy"))
    for tta, expected in (("none", (0.9, 0.7)), ("flips", (0.45, None))):
        out = tmp_path / f"{tta}.prob.zarr"
        predict_slide(slide, out, InferenceConfig(skip_background=False, batch=2, tta=tta), models=[model])
        meta = open_probability(out)[1]
        recorded = (meta["models"][0]["threshold"], meta["models"][0]["outline_threshold"])
        assert recorded == expected
        defaults = recorded_defaults(meta)
        assert (defaults["threshold"], defaults["outline_threshold"]) == expected


def test_whole_image_tta_inverts_each_transform_exactly():
    """The trainer's whole-image average of a preset is the mean of the model run on each transformed image and
    transformed back; a pointwise model, which commutes with every transform, is unchanged by it."""
    from napari_hubmap.inference.tta import DIHEDRAL

    image = np.random.default_rng(1).integers(0, 256, (64, 96, 3), np.uint8)  # not square: rotations swap H and W
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, padding=2), torch.nn.Tanh(), torch.nn.Conv2d(4, 1, 5, padding=2)).eval()
    device = torch.device("cpu")
    by_hand = np.mean([predict_image(net, np.ascontiguousarray(image[::sy, ::sx]), NORMALISATION, device)[::sy, ::sx]
                       for sy in (1, -1) for sx in (1, -1)], axis=0)
    flips = predict_image(net, image, NORMALISATION, device, PRESETS["flips"])
    assert flips.shape == (64, 96) and np.abs(flips - by_hand).max() < 1e-5
    assert np.abs(flips - predict_image(net, image, NORMALISATION, device)).max() > 1e-3  # the net does see orientation
    pointwise = torch.nn.Conv2d(3, 1, 1).eval()
    plain = predict_image(pointwise, image, NORMALISATION, device)
    assert np.abs(predict_image(pointwise, image, NORMALISATION, device, tuple(DIHEDRAL)) - plain).max() < 1e-5

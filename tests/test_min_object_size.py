"""A model card's smallest glomerulus (``min_object_um2``): checked and round-tripped by the card,
recorded per model by predict, turned into pixels of the map by ``recorded_min_size`` and used as the
default minimum size of ``napari-hubmap postprocess`` and of a project's pseudo-labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from synthetic_maps import disk, write_prob_store

from napari_hubmap.cli import main
from napari_hubmap.errors import HubmapInputError
from napari_hubmap.inference import InferenceConfig, predict_slide
from napari_hubmap.inference.engine import settings_digest
from napari_hubmap.stores.labels import open_labels
from napari_hubmap.stores.probability import open_probability
from napari_hubmap.postprocess.slide import map_mpp, recorded_min_size
from napari_hubmap.registry import LoadedModel, ModelCard

NORMALISATION = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "max_pixel_value": 255.0}


def card(**fields) -> ModelCard:
    return ModelCard(name="toy", architecture="Unet", encoder="tu-test_resnet", normalization=NORMALISATION, **fields)


def test_card_round_trips_the_field_and_old_cards_read_as_zero():
    made = card(min_object_um2=1500)
    again = ModelCard.from_json(made.to_json())
    assert again == made and isinstance(again.min_object_um2, float) and again.min_object_um2 == 1500.0
    old = json.loads(made.to_json())
    del old["min_object_um2"]  # a card written before the field existed
    assert ModelCard.from_json(json.dumps(old)).min_object_um2 == 0.0


@pytest.mark.parametrize("bad", [-1.0, "1500", True, None, float("nan"), float("inf")])
def test_a_bad_value_is_a_card_error_naming_file_and_field(bad):
    text = json.loads(card().to_json())
    text["min_object_um2"] = bad
    with pytest.raises(HubmapInputError, match="card field 'min_object_um2'") as error:
        ModelCard.from_json(json.dumps(text), source="models/toy/card.json")
    assert "models/toy/card.json" in str(error.value)


def test_old_stores_keep_their_resume_key():
    model = {"name": "m", "downscale": 2.0, "threshold": 0.5}
    settings = {"slide": "s.tif", "models": [model]}
    assert settings_digest(settings) == settings_digest({**settings, "models": [{**model, "min_object_um2": 900.0}]})


def toy(seed: int, min_object_um2: float) -> LoadedModel:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 3, padding=1))
    return LoadedModel(card(downscale=2.0, tile=64, overlap=16, min_object_um2=min_object_um2), net.eval(), Path(f"toy{seed}"))


def test_recorded_min_size_of_a_real_prediction_is_the_area_in_map_pixels(tmp_path):
    slide = tmp_path / "s.tif"
    tifffile.imwrite(slide, np.random.default_rng(0).integers(0, 256, (96, 128, 3), np.uint8), photometric="rgb")
    out = tmp_path / "s.prob.zarr"
    config = InferenceConfig(mpp=0.25, skip_background=False, batch=2)  # map: 0.25 µm/px x downscale 2
    predict_slide(slide, out, config, models=[toy(0, 100.0), toy(1, 60.0)])
    meta = open_probability(out)[1]
    assert [m["min_object_um2"] for m in meta["models"]] == [100.0, 60.0]
    assert map_mpp(meta) == pytest.approx(0.5) and map_mpp(meta, 1) == pytest.approx(1.0)
    assert recorded_min_size(meta) == 400  # the larger of the two: 100 µm² / 0.25 µm² per px
    assert recorded_min_size(meta, level=1) == 100
    assert recorded_min_size({**meta, "models": [{**m, "min_object_um2": 0.0} for m in meta["models"]]}) == 0
    unknown = {k: v for k, v in meta.items() if k not in ("mpp", "mpp_source", "mpp_file")}
    assert map_mpp(unknown) is None and recorded_min_size(unknown) == 0  # no silent guess


def test_a_resumed_map_records_the_cards_defaults_of_now(tmp_path):
    slide = tmp_path / "s.tif"
    tifffile.imwrite(slide, np.random.default_rng(0).integers(0, 256, (96, 128, 3), np.uint8), photometric="rgb")
    out = tmp_path / "s.prob.zarr"
    config = InferenceConfig(mpp=0.25, skip_background=False, batch=2)
    predict_slide(slide, out, config, models=[toy(0, 100.0)])
    before = open_probability(out)[0][0][:]
    same = toy(0, 300.0)  # the same weights; its card's floor and threshold changed since (a saved default)
    again = LoadedModel(same.card.replace(threshold=0.7), same.module, same.path)
    result = predict_slide(slide, out, config, models=[again])
    levels, meta = open_probability(out)
    assert result.resumed_rows == levels[0].shape[0]  # nothing recomputed: the map is the same
    assert np.array_equal(levels[0][:], before)
    assert meta["models"][0]["min_object_um2"] == 300.0 and meta["models"][0]["threshold"] == 0.7
    assert recorded_min_size(meta) == 1200  # what the Post-processing panel and postprocess now start from


def test_an_area_just_under_a_whole_pixel_count_rounds_up():
    meta = {"downscale": 1.0, "mpp": 0.3, "mpp_source": "file", "models": [{"min_object_um2": 0.09 * 7}]}
    assert recorded_min_size(meta) == 7  # 0.63 / 0.09 is 7.000000000000001 in floats
    assert recorded_min_size({**meta, "models": [{"min_object_um2": 0.09 * 7 + 0.001}]}) == 8


@pytest.fixture
def two_objects(tmp_path):
    """A 2x map (1 µm/px: the slide at 0.5) of a small disk (~80 px) and a large one (~700 px); the
    model's card says glomeruli are at least 200 µm², i.e. 200 px of the map."""
    shape = (200, 1040)  # over 1024 px wide: the store has a level 1
    prob = np.where(disk(shape, (30, 30), 5) | disk(shape, (60, 100), 15), 230, 10).astype(np.uint8)
    settings = {"models": [{"name": "m", "threshold": 0.5, "min_object_um2": 200.0}], "mpp": 0.5,
                "mpp_source": "file", "mpp_file": 0.5}
    return write_prob_store(tmp_path / "kid.prob.zarr", prob, downscale=2.0, settings=settings)


def postprocess(capsys, store, out, *args) -> dict:
    assert main(["postprocess", str(store), "--out", str(out), *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out.strip())


def test_cli_postprocess_drops_objects_under_the_recorded_size_unless_told(two_objects, tmp_path, capsys):
    line = postprocess(capsys, two_objects, tmp_path / "a.labels.zarr")
    assert line["min_size"] == 200 and line["objects"] == 1
    assert np.asarray(open_labels(tmp_path / "a.labels.zarr")[0][0])[30, 30] == 0  # the small one is gone
    line = postprocess(capsys, two_objects, tmp_path / "b.labels.zarr", "--min-size", 0)
    assert line["min_size"] == 0 and line["objects"] == 2
    line = postprocess(capsys, two_objects, tmp_path / "c.labels.zarr", "--level", 1)
    assert line["min_size"] == 50 and line["downscale"] == 4.0  # 200 µm² at 2 µm/px


def test_project_pseudo_labels_use_the_recorded_size_at_the_project_level(two_objects, tmp_path):
    from PIL import Image

    from napari_hubmap.project import add_slide, init_project

    slide = tmp_path / "kid.png"
    Image.fromarray(np.zeros((400, 2080, 3), np.uint8)).save(slide)
    project = init_project(tmp_path / "project", tile=64, downscale=4)  # level 1 of the 2x map
    entry = add_slide(project, slide, predictions=[two_objects])
    assert entry.predictions[0].level == 1 and entry.predictions[0].postprocess["min_size"] == 50
    labels = np.asarray(open_labels(project.resolve(entry.predictions[0].pseudo_labels))[0][0])
    assert labels.max() == 1 and labels[15, 15] == 0  # the small disk (~20 px at level 1) dropped

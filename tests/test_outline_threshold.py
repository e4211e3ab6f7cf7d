"""A model card's outline threshold (post-processing's hysteresis): checked and round-tripped by the card, recorded
per model by predict (outside the resume key), and the default of ``napari-hubmap postprocess``, of ``batch`` and of a
project's pseudo-labels; ``--outline-threshold`` overrides it (1: outlines at the threshold)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from synthetic_maps import write_prob_store

from napari_hubmap.cli import main
from napari_hubmap.errors import HubmapInputError
from napari_hubmap.inference import InferenceConfig, predict_slide
from napari_hubmap.inference.engine import settings_digest
from napari_hubmap.postprocess import PostprocessConfig, postprocess_region
from napari_hubmap.postprocess.slide import recorded_defaults, recorded_outline
from napari_hubmap.registry import LoadedModel, ModelCard
from napari_hubmap.stores.labels import open_labels
from napari_hubmap.stores.probability import open_probability

NORMALISATION = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "max_pixel_value": 255.0}


def card(**fields) -> ModelCard:
    return ModelCard(name="toy", architecture="Unet", encoder="tu-test_resnet", normalization=NORMALISATION, **fields)


def test_card_round_trips_the_field_and_old_cards_read_as_none():
    made = card(outline_threshold=0.5)
    again = ModelCard.from_json(made.to_json())
    assert again == made and again.outline_threshold == 0.5
    old = json.loads(made.to_json())
    del old["outline_threshold"]  # a card written before the field existed
    assert ModelCard.from_json(json.dumps(old)).outline_threshold is None


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", True, float("nan")])
def test_a_bad_value_is_a_card_error_naming_file_and_field(bad):
    text = json.loads(card().to_json())
    text["outline_threshold"] = bad
    with pytest.raises(HubmapInputError, match="card field 'outline_threshold'") as error:
        ModelCard.from_json(json.dumps(text), source="models/toy/card.json")
    assert "models/toy/card.json" in str(error.value)


def test_predict_records_it_outside_the_resume_key(tmp_path):
    slide = tmp_path / "s.tif"
    tifffile.imwrite(slide, np.random.default_rng(0).integers(0, 256, (96, 128, 3), np.uint8), photometric="rgb")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 3, padding=1)).eval()
    model = LoadedModel(card(downscale=2.0, tile=64, overlap=16, outline_threshold=0.4), net, Path("toy"))
    predict_slide(slide, tmp_path / "s.prob.zarr", InferenceConfig(skip_background=False, batch=2), models=[model])
    meta = open_probability(tmp_path / "s.prob.zarr")[1]
    assert meta["models"][0]["outline_threshold"] == 0.4 and recorded_outline(meta) == 0.4
    base = {"slide": "s.tif", "models": [{"name": "m", "downscale": 2.0}]}
    assert settings_digest(base) == settings_digest({**base, "models": [{"name": "m", "downscale": 2.0,
                                                                         "outline_threshold": 0.4}]})


def test_only_an_outline_every_model_records_alike_is_a_default():
    one = {"models": [{"threshold": 0.9, "outline_threshold": 0.5}]}
    assert recorded_defaults(one) == {"threshold": 0.9, "min_size": 0, "outline_threshold": 0.5}
    assert recorded_outline({"models": [{"outline_threshold": 0.5}, {"outline_threshold": 0.6}]}) is None
    assert recorded_outline({"models": [{"outline_threshold": 0.5}, {}]}) is None
    assert recorded_outline({"models": [{"outline_threshold": None}]}) is None
    assert recorded_outline({}) is None and recorded_defaults({})["threshold"] == PostprocessConfig.threshold


def cones() -> np.ndarray:
    """Two cones peaking at 0.98 (found at 0.9), their shoulders reaching 0.3, on a 1100 px wide map."""
    yy, xx = np.mgrid[:120, :1100]
    prob = np.maximum.reduce([np.clip(1 - np.hypot(yy - 60, xx - cx) / 40, 0, 1) for cx in (100, 600)])
    return np.rint(prob * 250).astype(np.uint8)


@pytest.fixture
def outlined(tmp_path):
    settings = {"models": [{"name": "m", "threshold": 0.9, "min_object_um2": 0.0, "outline_threshold": 0.4}]}
    return write_prob_store(tmp_path / "kid.prob.zarr", cones(), settings=settings)


def postprocess(capsys, store, out, *args) -> dict:
    assert main(["postprocess", str(store), "--out", str(out), *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out.strip())


def test_cli_postprocess_spreads_to_the_recorded_outline_unless_told(outlined, tmp_path, capsys):
    line = postprocess(capsys, outlined, tmp_path / "a.labels.zarr")
    assert line["threshold"] == 0.9 and line["outline_threshold"] == 0.4 and line["objects"] == 2
    labels = np.asarray(open_labels(tmp_path / "a.labels.zarr")[0][0])
    prob = cones()
    assert np.array_equal(labels, postprocess_region(prob, PostprocessConfig(threshold=0.9, outline_threshold=0.4)))
    assert np.array_equal(labels > 0, prob >= 102)  # every pixel of 0.4 (102 of 255) and above
    line = postprocess(capsys, outlined, tmp_path / "b.labels.zarr", "--outline-threshold", 1)
    assert line["outline_threshold"] == 1.0
    assert np.array_equal(np.asarray(open_labels(tmp_path / "b.labels.zarr")[0][0]) > 0, prob >= 230)  # 0.9: 230
    assert main(["postprocess", str(outlined), "--out", str(tmp_path / "c.labels.zarr"), "--outline-threshold", "2"]) == 2
    assert "outline_threshold must be in [0, 1]" in capsys.readouterr().err


def test_postprocess_slide_without_a_config_uses_the_recorded_defaults(outlined, tmp_path):
    """The Python function does what the command does: the map's models' threshold and outline threshold."""
    from napari_hubmap.postprocess import postprocess_slide

    result = postprocess_slide(outlined, tmp_path / "f.labels.zarr")
    labels = np.asarray(open_labels(tmp_path / "f.labels.zarr")[0][0])
    assert result.objects == 2 and np.array_equal(labels > 0, cones() >= 102)


def test_batch_and_project_start_from_the_recorded_outline(outlined, tmp_path):
    from PIL import Image

    from napari_hubmap.batch.slide import postprocess_config
    from napari_hubmap.project import add_slide, init_project

    assert postprocess_config(outlined, {}).outline_threshold == 0.4
    assert postprocess_config(outlined, {"outline_threshold": 0.6}).outline_threshold == 0.6
    slide = tmp_path / "kid.png"
    Image.fromarray(np.zeros((120, 1100, 3), np.uint8)).save(slide)
    project = init_project(tmp_path / "project", tile=64, downscale=1)
    entry = add_slide(project, slide, predictions=[outlined])
    assert entry.predictions[0].postprocess["outline_threshold"] == 0.4
    labels = np.asarray(open_labels(project.resolve(entry.predictions[0].pseudo_labels))[0][0])
    assert np.array_equal(labels > 0, cones() >= 102)

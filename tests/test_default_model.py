"""The shipped default model: small, a complete card, loads from the registry, finds glomeruli it never saw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_hubmap.defaults import DEFAULT_MODEL
from napari_hubmap.registry import find_model, load_model, read_card
from napari_hubmap.registry.store import repository_models_folder

HELD_BACK_PAS = ["10025", "10102", "10149", "10165"]
MIN_DICE = 0.5
"""Under what models/README.md reports for held-back PAS; a broken model scores near 0."""


@pytest.fixture(scope="module")
def model():
    folder = repository_models_folder() / DEFAULT_MODEL
    assert folder.is_dir(), "models/hubmap-default is missing"
    return load_model(folder)


def test_shipped_model_is_small_and_its_card_complete(model, bundled_models):
    folder = bundled_models / DEFAULT_MODEL
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 30 * 2**20
    assert find_model(DEFAULT_MODEL) == folder
    card = read_card(folder)
    assert card.target_mpp and card.tile % 32 == 0 and 0 < card.threshold < 1
    td = card.training_data
    assert {"kidney-he", "pas-tiles", "hubmap-16x"} <= set(td["sources"]) and len(td["manifest_sha256"]) == 64
    assert set(HELD_BACK_PAS) | {"C004"} <= set(td["config"]["val_groups"])
    assert not any(name.startswith("kidney-he/C004") for name in td["train_images"])
    assert not any(name.split("/")[-1] in HELD_BACK_PAS for name in td["train_images"])
    by_source = card.metrics["validation_by_source"]
    assert {"kidney-he", "pas-tiles"} <= set(by_source)
    folds = card.metrics["cross_validation"]  # both patient-wise folds, scored by eval_default_model.py
    assert len(folds) == 2 and all({"kidney-he", "pas-tiles"} <= set(fold["plain"]) for fold in folds.values())
    assert {"kidney-he/C003_region16", "kidney-he/C004_region1"} <= set(td["mpp"])  # per-image µm/px


def test_default_model_finds_glomeruli_in_held_back_pas(model, shared_data):
    from napari_hubmap.training import load_sources
    from napari_hubmap.training.validate import validation_scores

    card = model.card
    mpp = card.training_data["mpp"]  # the µm/px it was trained with
    held = set(card.training_data["validation_images"])
    samples = [s for s in load_sources([shared_data / "pas-tiles"], downscale=card.downscale,
                                       target_mpp=card.target_mpp, mpp_overrides=mpp) if s.name in held]
    assert sorted(s.name.split("/")[1] for s in samples) == HELD_BACK_PAS
    with torch.inference_mode():
        scores = validation_scores(model.module, samples, card.normalization, torch.device("cpu"), [card.threshold])
    assert scores["by_source"]["pas-tiles"]["dice"] > MIN_DICE, scores["by_source"]


@pytest.mark.parametrize("stain", ["pas", "he"])
def test_default_model_on_unseen_synthetic_slides(model, stain):
    from napari_hubmap.synth import sample_image
    from napari_hubmap.training.sources import resize_image, resize_mask, working_shape
    from napari_hubmap.training.validate import predict_image

    image, labels = sample_image((1536, 1536), seed=7, stain=stain)  # trained on seeds 1000-1003
    factor = model.card.target_mpp / 0.5
    shape = working_shape(image.shape[:2], factor)
    prob = predict_image(model.module, resize_image(image, shape), model.card.normalization, torch.device("cpu"))
    truth = resize_mask(labels > 0, shape).astype(bool)
    pred = prob >= model.card.threshold
    dice = 2 * np.count_nonzero(pred & truth) / (np.count_nonzero(pred) + np.count_nonzero(truth))
    assert dice > MIN_DICE

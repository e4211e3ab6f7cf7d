"""The shipped default model: small, a complete card with honest held-out figures, loads from the
registry, and its weights are the trained ones (a smoke check on two of its HuBMAP PAS training tiles;
how it does on tissue it never saw is ``benchmarks/generalisation.py``'s job, and its card's)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_hubmap.defaults import DEFAULT_MODEL
from napari_hubmap.registry import find_model, load_model, read_card
from napari_hubmap.registry.store import repository_models_folder

MAX_BYTES = 60 * 2**20
TRAINING_TILE_DICE = 0.75
"""On tiles it trained on, the network alone (whole tile at the working scale, the card's threshold, no
post-processing): a model whose weights were lost or scrambled scores near 0. The shipped model reaches per-image
Dice 0.83 on average over its 92 HuBMAP training tiles, 0.80 and 0.91 on these two; issue 12's 0.85 is checked on
what a user gets, the product's path (:func:`test_default_model_through_predict_postprocess_evaluate`)."""
UNSEEN_SYNTHETIC_DICE = 0.5


@pytest.fixture(scope="module")
def model():
    folder = repository_models_folder() / DEFAULT_MODEL
    assert folder.is_dir(), "models/hubmap-default is missing"
    return load_model(folder)


def test_shipped_model_is_small_and_its_card_complete(model, bundled_models):
    folder = bundled_models / DEFAULT_MODEL
    assert sum(p.stat().st_size for p in folder.iterdir()) <= MAX_BYTES
    assert find_model(DEFAULT_MODEL) == folder
    card = read_card(folder)
    assert card.target_mpp and card.tile % 32 == 0 and 0 < card.threshold < 1
    td = card.training_data
    assert {"hubmap-pas", "kidney-he", "pas-tiles", "hubmap-16x"} <= set(td["sources"])
    assert len(td["manifest_sha256"]) == 64 and td["mpp"]["hubmap-pas"] == 1.0
    assert {"kidney-he/C003_region16", "kidney-he/C004_region1"} <= set(td["mpp"])  # per-image µm/px


def generalisation_benchmark():
    """``benchmarks/generalisation.py``, which defines each run's held-out images."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "generalisation.py"
    spec = importlib.util.spec_from_file_location("generalisation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_card_figures_are_on_images_the_run_never_saw(model, shared_data):
    """Every run in the card's generalisation table held its scored images out of training."""
    run_plan = generalisation_benchmark().run_plan
    figures = model.card.metrics["generalisation"]
    assert figures["runs"], "no held-out figures in the card"
    for run, result in figures["runs"].items():
        _, _, held = run_plan(run, shared_data)
        assert result["images"] == len(held) > 0
        plain, flips = result["plain"], result["flips"]
        assert plain["tp"] + plain["fn"] == flips["tp"] + flips["fn"] > 0  # one truth, counted twice alike
        for scores in (plain, flips):  # the pooled figures are the counts' own
            tp, fp, fn = scores["tp"], scores["fp"], scores["fn"]
            assert scores["object_precision"] == pytest.approx(tp / (tp + fp) if tp + fp else 0.0)  # nothing marked: 0
            assert scores["object_recall"] == pytest.approx(tp / (tp + fn))
            assert scores["object_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    shipped = model.card.training_data
    _, excluded, held = run_plan(figures["trained_as"], shared_data)
    seen = set(shipped["train_images"]) | set(shipped["validation_images"])
    assert not seen & set(held) and set(excluded) <= set(shipped["config"]["exclude_groups"])


def test_card_figures_are_the_committed_scores(model):
    """The card carries every committed held-out score of the recipe it was trained with (``generalisation.py
    record`` was run after the last ``score``), so the figures the README quotes are the card's own."""
    benchmark = generalisation_benchmark()
    shipped = model.card.metrics["generalisation"]
    assert shipped["recipe"] == benchmark.recipe_of(shipped["trained_as"])
    committed = benchmark.recipe_figures(benchmark.figures_variant(benchmark.variant_of(shipped["trained_as"])))
    assert committed and shipped["runs"] == committed


def test_the_trainers_defaults_are_the_shipped_models_recipe(model):
    """``napari-hubmap train --data DIR`` (and the Training panel, which leaves these to the trainer) trains what the
    shipped default was trained with; only the split differs (the benchmark's tiles have no patient groups, a user's
    data is split by group), the benchmark's synthetic regions, which are not a setting of the run, and the seed of
    the run that was shipped."""
    from napari_hubmap.cli import build_parser
    from napari_hubmap.cli.train import config_of

    recipe = model.card.metrics["generalisation"]["recipe"]
    options = [part for option, value in recipe.items() if option not in ("--split", "--synthetic", "--seed")
               for part in ((option, value) if value else (option,))]
    as_shipped = config_of(build_parser().parse_args(["train", "--data", "d", "--out", "o", *options]))
    by_default = config_of(build_parser().parse_args(["train", "--data", "d", "--out", "o"]))
    assert by_default == as_shipped


def test_default_model_segments_its_hubmap_training_tiles(model, shared_data):
    from napari_hubmap.training import load_sources
    from napari_hubmap.training.validate import predict_image

    card = model.card
    tiles = sorted(name for name in card.training_data["train_images"] if name.startswith("hubmap-pas/"))[:2]
    samples = [s for s in load_sources([shared_data / "hubmap-pas"], downscale=card.downscale,
                                       target_mpp=card.target_mpp, mpp_overrides=card.training_data["mpp"])
               if s.name in tiles]
    assert len(samples) == 2
    with torch.inference_mode():
        for sample in samples:
            pred = predict_image(model.module, sample.image, card.normalization, torch.device("cpu")) >= card.threshold
            truth = sample.mask.astype(bool)
            dice = 2 * np.count_nonzero(pred & truth) / (np.count_nonzero(pred) + np.count_nonzero(truth))
            assert dice >= TRAINING_TILE_DICE, (sample.name, dice)


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
    assert dice > UNSEEN_SYNTHETIC_DICE


PATH_TILES = ("107.jpg", "108.jpg")
"""The first two tiles of ``benchmarks/default_model_path.py``'s list that the shipped model trained on (7 and 4
glomeruli): issue 12's smoke check, Dice >= 0.85 on two ``hubmap-pas`` training tiles, through the product's path."""


@pytest.mark.parametrize("tile", PATH_TILES)
def test_default_model_through_predict_postprocess_evaluate(tile, shared_data, tmp_path, bundled_models):
    """The shipped model through the product's path (``predict_slide`` -> ``postprocess_slide`` with the card's
    defaults -> ``evaluate`` of the labels store against the LabelMe polygons) lands where the benchmark measured
    it: Dice within 0.03 and at least 0.85, the glomeruli found and matched within one."""
    path_benchmark = Path(__file__).resolve().parents[1] / "benchmarks" / "default_model_path.py"
    import importlib.util

    spec = importlib.util.spec_from_file_location("default_model_path", path_benchmark)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    measured = json.loads(bench.RESULT.read_text())
    model = bundled_models / DEFAULT_MODEL
    assert measured["weights_sha256"] == read_card(model).weights_sha256, "re-run the benchmark for the new weights"
    expected = measured["tiles"][tile]
    assert f"hubmap-pas/{Path(tile).stem}" in read_card(model).training_data["train_images"]
    image = shared_data / "hubmap-pas" / "images" / tile
    scores = bench.run_path(image, image.parent.parent / "annotations" / f"{Path(tile).stem}.json", model, tmp_path)
    assert scores["gt_count"] == expected["true"]
    assert scores["dice"] == pytest.approx(expected["dice"], abs=0.03) and scores["dice"] >= 0.85
    assert abs(scores["pred_count"] - expected["found"]) <= 1 and scores["tp"] >= expected["matched"] - 1


def test_a_seed_is_not_a_recipe():
    """Shipping the all-source run of a variant that only changes the seed (``all@stain1``) puts the held-out runs of
    the variant without it (``stain``) in the card; any other variant keeps its own."""
    benchmark = generalisation_benchmark()
    assert benchmark.figures_variant("stain1") == "stain" and benchmark.figures_variant("seed1") == ""
    assert benchmark.figures_variant("stain") == "stain" and benchmark.figures_variant("") == ""
    assert benchmark.figures_variant("h200") == "h200"  # the recipe's options, but another machine: not a seed


def test_a_seed_twins_all_source_run_validates_on_the_shipped_models_images():
    """``all@stain1`` (like ``all@twin``) is scored against the shipped model on the images that validated it, so it
    validates on them too; a held-out run of the same variant draws its own validation images."""
    benchmark = generalisation_benchmark()
    shipped = ",".join(benchmark.shipped_validation_images())
    assert shipped and benchmark.recipe_of("all@stain1")["--val-groups"] == shipped
    assert benchmark.recipe_of("all@twin")["--val-groups"] == shipped
    assert "--val-groups" not in benchmark.recipe_of("loso-pas-tiles@stain1")
    assert "--val-groups" not in benchmark.recipe_of("all@stain")

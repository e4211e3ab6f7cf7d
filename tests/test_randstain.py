"""RandStainNA-style augmentation (``--colour-augment randstain``): templates drawn from the spread of the
training images' own tissue colours, every source weighted alike, each tile's tissue moved onto one."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from napari_hubmap.stain_standard import (LabSpread, LabStats, standardise, stats_spread, tissue_pixels,
                                          tissue_stats, to_lab)
from napari_hubmap.synth import sample_image
from napari_hubmap.training.augment import training_augmentation
from napari_hubmap.training.sources import Sample
from napari_hubmap.training.stain import LabTemplateTransfer
from napari_hubmap.training.standardise import colour_spread

PURPLE = LabStats((50.0, 32.0, -26.0), (15.0, 13.0, 10.0))
PINK = LabStats((70.0, 25.0, -5.0), (10.0, 8.0, 6.0))


@pytest.fixture(scope="module")
def section():
    image = sample_image((160, 160), seed=4, stain="pas")[0]
    return standardise(image, tissue_stats(image), PURPLE)


def test_every_source_counts_alike_whatever_its_number_of_images():
    # ten purple images of one source and one pink of another: the centre lies halfway, not near purple
    spread = stats_spread([PURPLE] * 10 + [PINK], [1 / 10] * 10 + [1.0])
    assert np.allclose(spread.mean_of_means, (60.0, 28.5, -15.5))
    assert np.allclose(spread.spread_of_means, (10.0, 3.5, 10.5))  # two points, half their distance apart
    assert np.allclose(spread.mean_of_stds, (12.5, 10.5, 8.0))
    unweighted = stats_spread([PURPLE] * 10 + [PINK])
    assert unweighted.mean_of_means[0] < 52.0
    assert stats_spread([PURPLE, None]) is None and stats_spread([]) is None


def test_colour_spread_weights_the_training_images_by_source(section):
    pink = standardise(section, tissue_stats(section), PINK)
    samples = [Sample(f"a/{k}", f"a{k}", "a", section, np.zeros(section.shape[:2], np.uint8)) for k in range(6)]
    samples.append(Sample("b/0", "b0", "b", pink, np.zeros(section.shape[:2], np.uint8)))
    spread = colour_spread(samples)
    halfway = (np.asarray(tissue_stats(section).mean) + tissue_stats(pink).mean) / 2
    assert np.allclose(spread.mean_of_means, halfway, atol=0.5)


def test_templates_are_drawn_reproducibly_and_keep_sane_spreads():
    spread = LabSpread((60.0, 28.0, -15.0), (30.0, 3.0, 10.0), (12.0, 10.0, 8.0), (20.0, 2.0, 2.0))
    first = [spread.draw(np.random.default_rng(7)) for _ in range(2)]
    assert first[0] == first[1]
    draws = [spread.draw(np.random.default_rng(k)) for k in range(300)]
    assert all(0.0 <= d.mean[0] <= 100.0 for d in draws)  # a wide L* spread still gives real lightness
    assert min(d.std[0] for d in draws) >= 3.0  # at least a quarter of the mean spread: never a flat tissue
    assert np.std([d.mean[2] for d in draws]) == pytest.approx(10.0, rel=0.2)


def test_a_tile_takes_the_drawn_colour_and_its_glass_keeps_its_own(section):
    spread = LabSpread(PINK.mean, (0.0, 0.0, 0.0), PINK.std, (0.0, 0.0, 0.0))  # every template is PINK
    transfer = LabTemplateTransfer(spread, p=1)
    transfer.set_random_seed(0)
    out = transfer(image=section)["image"]
    assert out.dtype == np.uint8 and out.shape == section.shape
    assert np.allclose(tissue_stats(out).mean, PINK.mean, atol=2.0), tissue_stats(out)
    glass = ~tissue_pixels(to_lab(section))
    assert glass.any() and np.array_equal(out[glass], section[glass])
    blank = np.full((64, 64, 3), 245, np.uint8)
    assert np.array_equal(transfer(image=blank)["image"], blank)  # no tissue: nothing to move
    assert np.array_equal(LabTemplateTransfer(None, p=1)(image=section)["image"], section)


def test_randstain_spreads_colours_wider_than_standard_and_pickles_for_loader_workers(section):
    mask = np.zeros(section.shape[:2], np.uint8)
    wide = stats_spread([PURPLE, PINK, LabStats((45.0, 10.0, 5.0), (14.0, 7.0, 7.0))])
    spread = {}
    for colour, lab_spread in (("standard", None), ("randstain", wide)):
        aug = training_augmentation(160, colour=colour, lab_spread=lab_spread)
        aug.set_random_seed(0)
        means = np.array([aug(image=section, mask=mask)["image"].reshape(-1, 3).mean(0) for _ in range(60)])
        spread[colour] = means.std(0).mean()
    assert spread["randstain"] > 1.3 * spread["standard"], spread
    again = pickle.loads(pickle.dumps(training_augmentation(160, colour="randstain", lab_spread=wide)))
    assert again(image=section, mask=mask)["image"].shape == section.shape

"""Training augmentation: image and mask stay aligned, shapes and values hold, stain jitter is safe."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from napari_hubmap.stain_standard import LabSpread
from napari_hubmap.training.augment import training_augmentation
from napari_hubmap.training.stain import StainJitter

TILE = 96
SPREAD = LabSpread((60.0, 28.0, -15.0), (10.0, 4.0, 10.0), (12.0, 10.0, 8.0), (3.0, 2.0, 2.0))
"""Training colours between HuBMAP's purple PAS and a pink H&E, for ``randstain``."""


def disk_tile(rng) -> tuple[np.ndarray, np.ndarray]:
    """A pink tissue-like tile with one dark purple disk (the 'glomerulus') and its mask."""
    yy, xx = np.mgrid[:TILE, :TILE]
    cy, cx = rng.integers(30, 66, 2)
    mask = (np.hypot(yy - cy, xx - cx) < 16).astype(np.uint8)
    image = np.empty((TILE, TILE, 3), np.uint8)
    image[:] = (235, 170, 200)
    image += rng.integers(0, 12, image.shape, dtype=np.uint8)
    image[mask > 0] = (90, 40, 120)
    return image, mask


@pytest.mark.parametrize("colour", ["standard", "stain", "strong", "randstain"])
def test_the_mask_follows_the_image_through_every_transform(colour):
    aug = training_augmentation(TILE, colour=colour, lab_spread=SPREAD if colour == "randstain" else None)
    aug.set_random_seed(0)
    rng = np.random.default_rng(1)
    margin = {"standard": 20, "stain": 20, "strong": 5, "randstain": 5}[colour]  # strong contrast and CLAHE changes, and a template of low contrast, narrow the gap on purpose
    checked = 0
    for _ in range(40):
        image, mask = disk_tile(rng)
        out = aug(image=image, mask=mask)
        img, msk = out["image"], out["mask"]
        assert img.shape == image.shape and img.dtype == np.uint8
        assert msk.shape == mask.shape and set(np.unique(msk)) <= {0, 1}
        darkness = 255 - img.astype(float).mean(-1)
        inside, outside = msk > 0, msk == 0
        if inside.sum() > 50 and outside.sum() > 50:  # GridDropout may blank much of it
            assert np.median(darkness[inside]) > np.median(darkness[outside]) + margin
            checked += 1
    assert checked >= 30  # the comparison above ran on most tiles, not on none


def test_the_training_dataset_hands_out_the_augmented_mask_with_its_image():
    """Through the trainer's own path (TileSampler -> TileDataset with the training augmentation): each
    tile's mask covers its dark disk, so a dataset that warped the image and kept the drawn mask fails."""
    import torch

    from napari_hubmap.training.sampling import TileDataset, TileSampler
    from napari_hubmap.training.sources import Sample

    rng = np.random.default_rng(4)
    samples = []
    for k in range(3):
        image, mask = disk_tile(rng)
        samples.append(Sample(name=f"d/{k}", group=f"g{k}", source="d", image=image, mask=mask))
    identity = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "max_pixel_value": 255.0}
    dataset = TileDataset(TileSampler(samples, TILE, positive_fraction=1.0), 40, identity,
                          training_augmentation(TILE), seed=2)
    checked = 0
    for i in range(len(dataset)):
        image, mask = dataset[i]
        assert image.shape == (3, TILE, TILE) and mask.shape == (1, TILE, TILE) and mask.dtype == torch.float32
        darkness = 1 - image.mean(0).numpy()
        inside, outside = mask[0].numpy() > 0, mask[0].numpy() == 0
        if inside.sum() > 50 and outside.sum() > 50:
            assert np.median(darkness[inside]) > np.median(darkness[outside]) + 0.08, i
            checked += 1
    assert checked >= 30


def test_strength_zero_is_geometry_only():
    aug = training_augmentation(TILE, strength=0)
    aug.set_random_seed(0)
    image, mask = disk_tile(np.random.default_rng(2))
    for _ in range(10):
        out = aug(image=image, mask=mask)
        assert sorted(map(tuple, out["image"].reshape(-1, 3))) == sorted(map(tuple, image.reshape(-1, 3)))
        assert out["mask"].sum() == mask.sum()


@pytest.mark.parametrize("value", [255, 0, 128, (200, 150, 220)])
def test_stain_jitter_leaves_tiles_without_stain_alone(value):
    """Glass, black padding, a grey or pink flat colour: no stain to fit, the tile comes back as it was
    (the Macenko fit used to succeed on flat colours and paint them with saturated pixels)."""
    flat = np.empty((TILE, TILE, 3), np.uint8)
    flat[:] = value
    jitter = StainJitter(method="macenko", p=1)
    for _ in range(5):
        out = jitter(image=flat)["image"]
        assert out.dtype == np.uint8 and np.array_equal(out, flat)


def test_stain_jitter_changes_stained_tissue_and_pickles_for_loader_workers():
    image, _ = disk_tile(np.random.default_rng(3))
    jitter = StainJitter(method="macenko", intensity_scale_range=(0.5, 0.6), p=1)
    out = jitter(image=image)["image"]
    assert np.abs(out.astype(int) - image).mean() > 1
    again = pickle.loads(pickle.dumps(training_augmentation(TILE)))
    assert again(image=image, mask=np.zeros(image.shape[:2], np.uint8))["image"].shape == image.shape


def test_strong_colour_changes_colours_further_and_keeps_the_geometry():
    """``strong`` spreads a tile's mean colour (and its hue) wider over many draws than ``standard`` (``stain``
    between the two), while the
    same geometry (flips, affine) still moves image and mask together; an unknown name is refused."""
    image, mask = disk_tile(np.random.default_rng(5))
    spread = {}
    for colour in ("standard", "stain", "strong"):
        aug = training_augmentation(TILE, colour=colour)
        aug.set_random_seed(0)
        means = np.array([aug(image=image, mask=mask)["image"].reshape(-1, 3).mean(0) for _ in range(150)])
        spread[colour] = means.std(0).mean()
    assert spread["strong"] > 1.4 * spread["standard"], spread
    assert spread["standard"] < spread["stain"] < spread["strong"], spread  # the wide stain jitter alone: between
    with pytest.raises(ValueError, match="colour must be one of standard, stain, strong, randstain"):
        training_augmentation(TILE, colour="loud")

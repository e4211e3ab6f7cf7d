"""Tiles drawn from the training images: a share centred on glomeruli, the rest anywhere in tissue.

Each item of an epoch is drawn from its own seeded generator (seed, epoch, rank, index), so a run is
reproducible, resumes exactly, and loader workers or DDP ranks never draw the same tiles by accident.
"""

from __future__ import annotations

import numpy as np
import torch

from .sources import Sample

TISSUE_MIN_FRACTION = 0.2
"""A random (non-glomerulus) tile is redrawn a few times until this share of it is tissue."""


def tissue_fraction(tile: np.ndarray) -> float:
    """Share of pixels that are neither glass (bright, unsaturated) nor padding (black)."""
    rgb = tile.astype(np.int16)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    glass = (rgb.min(axis=-1) > 200) & (spread < 18)
    black = rgb.max(axis=-1) < 30
    return 1.0 - float((glass | black).mean())


def pad_to(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Reflect-pad an image smaller than the tile (and its mask) to at least ``size`` a side."""
    dy, dx = max(0, size - image.shape[0]), max(0, size - image.shape[1])
    if not dy and not dx:
        return image, mask
    pads = ((dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2))
    mode = "reflect" if image.shape[0] > dy and image.shape[1] > dx else "symmetric"
    return np.pad(image, pads + ((0, 0),), mode=mode), np.pad(mask, pads, mode=mode)


def source_balanced_weights(samples: list[Sample], areas) -> np.ndarray:
    """Each source (data folder) drawn equally often, its images by area: a folder of large images
    (or upsampled ones) must not drown a folder of small ones, nor one stain the other."""
    areas = np.asarray(areas, dtype=float)
    sources = [s.source for s in samples]
    totals = {name: areas[[i for i, n in enumerate(sources) if n == name]].sum() for name in set(sources)}
    weights = np.array([a / totals[n] for a, n in zip(areas, sources)]) / len(totals)
    return weights / weights.sum()


class TileSampler:
    """Draws (image tile, mask tile) pairs from samples; glomerulus-centred with ``positive_fraction``.

    Sources are balanced (see :func:`source_balanced_weights`).
    """

    def __init__(self, samples: list[Sample], tile: int, positive_fraction: float):
        self.tile = tile
        self.positive_fraction = positive_fraction
        self.images, self.masks, self.names = [], [], []
        for s in samples:
            image, mask = pad_to(s.image, s.mask, tile)
            self.images.append(image)
            self.masks.append(mask)
            self.names.append(s.name)
        self.weights = source_balanced_weights(samples, [m.size for m in self.masks])
        self.foreground = [np.flatnonzero(m.ravel()) for m in self.masks]
        self.with_glomeruli = np.array([f.size > 0 for f in self.foreground])

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        """One tile pair and the index of the image it came from."""
        positive = self.with_glomeruli.any() and rng.random() < self.positive_fraction
        if positive:
            weights = self.weights * self.with_glomeruli
            index = int(rng.choice(len(self.images), p=weights / weights.sum()))
            return (*self._around_glomerulus(index, rng), index)
        index = int(rng.choice(len(self.images), p=self.weights))
        best = None
        for _ in range(5):
            pair = self._crop(index, *self._random_corner(index, rng))
            if tissue_fraction(pair[0]) >= TISSUE_MIN_FRACTION:
                return (*pair, index)
            best = best or pair
        return (*best, index)

    def _random_corner(self, index: int, rng) -> tuple[int, int]:
        h, w = self.masks[index].shape
        return int(rng.integers(0, h - self.tile + 1)), int(rng.integers(0, w - self.tile + 1))

    def _around_glomerulus(self, index: int, rng) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.masks[index].shape
        flat = int(rng.choice(self.foreground[index]))
        cy, cx = divmod(flat, w)
        jitter = self.tile // 3
        y = int(np.clip(cy - self.tile // 2 + rng.integers(-jitter, jitter + 1), 0, h - self.tile))
        x = int(np.clip(cx - self.tile // 2 + rng.integers(-jitter, jitter + 1), 0, w - self.tile))
        return self._crop(index, y, x)

    def _crop(self, index: int, y: int, x: int) -> tuple[np.ndarray, np.ndarray]:
        t = self.tile
        return self.images[index][y:y + t, x:x + t], self.masks[index][y:y + t, x:x + t]


def to_tensor(image: np.ndarray, normalization: dict) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 normalised as the model card says."""
    mean = np.asarray(normalization["mean"], np.float32) * normalization["max_pixel_value"]
    std = np.asarray(normalization["std"], np.float32) * normalization["max_pixel_value"]
    return torch.from_numpy(((image.astype(np.float32) - mean) / std).transpose(2, 0, 1).copy())


class TileDataset(torch.utils.data.Dataset):
    """One epoch of augmented tiles; ``set_epoch`` before each epoch (as DistributedSampler wants)."""

    def __init__(self, sampler: TileSampler, length: int, normalization: dict, augment=None, *, seed: int = 0,
                 rank: int = 0):
        self.sampler = sampler
        self.length = length
        self.normalization = normalization
        self.augment = augment
        self.seed = seed
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, i])
        image, mask, _ = self.sampler.draw(rng)
        if self.augment is not None:
            _seed_albumentations(self.augment, rng)
            out = self.augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return to_tensor(image, self.normalization), torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None]


def _seed_albumentations(pipeline, rng: np.random.Generator) -> None:
    """albumentations 2 draws from its own generators; seed them from the item's generator."""
    if hasattr(pipeline, "set_random_seed"):
        pipeline.set_random_seed(int(rng.integers(0, 2**31 - 1)))

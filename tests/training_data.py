"""A tiny, easy training data folder: dark purple discs (glomeruli) on pink tissue, 0/1 PNG masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def disc_image(rng: np.random.Generator, size: int = 96, discs: int = 2) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for _ in range(discs):
        r = rng.integers(8, 14)
        cy, cx = rng.integers(r, size - r, 2)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    image = np.empty((size, size, 3), np.float32)
    image[:] = (225, 170, 200)
    image[mask] = (120, 60, 140)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_disc_folder(folder: Path, count: int = 6, seed: int = 0, size: int = 96) -> Path:
    """``folder/images/<g>_<i>.png`` + ``folder/masks/<g>_<i>.png`` (0/1), groups pA/pB/pC; mpp 2.0."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, mask = disc_image(rng, size)
        stem = f"p{'ABC'[i % 3]}_{i}"
        Image.fromarray(image).save(folder / "images" / f"{stem}.png")
        Image.fromarray(mask.astype(np.uint8)).save(folder / "masks" / f"{stem}.png")
    (folder / "dataset.json").write_text(json.dumps({"mpp": 2.0, "stain": "test"}))
    return folder

"""Deterministic synthetic kidney whole-slide images (PAS or H&E) with known glomeruli.

Everything is a pure function of the :class:`SynthSpec` and global pixel coordinates, so any
region (or pyramid-level region) renders alone, in any tiling, to identical pixels, and slides
of any size are written tile by tile without ever holding the image in memory.

- :func:`render_region` / :func:`ground_truth_labels`: pixels and labels of a region.
- :func:`glomeruli` / :func:`glomeruli_in_region`: the glomeruli, computed without rendering.
- :func:`write_synthetic_tiff`: a tiled (optionally pyramidal) TIFF like the HuBMAP slides.
- :func:`sample_image`: a small in-memory image with labels (napari sample data, tests).
"""

from __future__ import annotations

import numpy as np

from .layout import Glomerulus, glomeruli, glomeruli_in_region
from .render import ground_truth_labels, render_region
from .spec import SynthSpec
from .tiff import write_synthetic_tiff

__all__ = [
    "SynthSpec",
    "Glomerulus",
    "render_region",
    "ground_truth_labels",
    "glomeruli",
    "glomeruli_in_region",
    "write_synthetic_tiff",
    "sample_image",
    "sample_spec",
]


def sample_spec(size: tuple[int, int] = (1536, 2048), seed: int = 0, stain: str = "pas") -> SynthSpec:
    """The spec :func:`sample_image` renders: dense glomeruli and tissue for a small image."""
    height, width = size
    return SynthSpec(width, height, seed=seed, stain=stain, glomeruli_per_mm2=20.0, tissue_fraction=0.75)


def sample_image(
    size: tuple[int, int] = (1536, 2048), seed: int = 0, stain: str = "pas"
) -> tuple[np.ndarray, np.ndarray]:
    """A small synthetic slide in memory: (image (H, W, 3) uint8, labels (H, W) int32)."""
    spec = sample_spec(size, seed, stain)
    image = render_region(spec, 0, spec.height, 0, spec.width)
    labels = ground_truth_labels(spec, 0, spec.height, 0, spec.width)
    return image, labels

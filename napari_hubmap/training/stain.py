"""Stain augmentation: albumentations' ``HEStain`` (Macenko) leaving glass-only tiles alone, and RandStainNA's
template transfer.

``HEStain`` fits the stain matrix of each tile; on a tile without tissue (glass) the fit raises, and on a
flat colour (black padding, a grey border) it "succeeds" on a degenerate matrix and paints the tile
with saturated pixels. Neither has a stain to jitter, so both are returned unchanged. Imported
lazily by :mod:`.augment` (albumentations is slow to import); both defined at module level so that loader
workers can pickle them.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..stain_standard import standardise, tissue_stats

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # albumentations' version check and pydantic notes
    import albumentations as A


class StainJitter(A.HEStain):
    """``HEStain`` whose stain fit may fail: then the tile passes through unchanged."""

    def _get_stain_matrix(self, img: np.ndarray):
        if np.ptp(img.reshape(-1, img.shape[-1]), axis=0).max() == 0:  # one flat colour: no stain to fit
            return None
        try:
            return super()._get_stain_matrix(img)
        except (ValueError, np.linalg.LinAlgError):
            return None

    def apply(self, img: np.ndarray, stain_matrix=None, **params) -> np.ndarray:
        if stain_matrix is None:
            return img
        return super().apply(img, stain_matrix=stain_matrix, **params)


class LabTemplateTransfer(A.ImageOnlyTransform):
    """The tile's tissue colour moved onto a random template (RandStainNA, Shen et al., MICCAI 2022).

    Each template is drawn channel by channel from the spread of the training images' own tissue statistics
    (:class:`~napari_hubmap.stain_standard.LabSpread`): its CIELAB mean and standard deviation, which Reinhard's
    transfer (:func:`~napari_hubmap.stain_standard.standardise`) then gives the tile's tissue; glass keeps its
    colour. So a tile is seen in many plausible stainings between and around those of the training sources,
    not only in its own lab's. A tile with too little tissue passes through unchanged.
    """

    def __init__(self, spread=None, p: float = 0.5):
        super().__init__(p=p)
        self.spread = spread

    def get_params(self) -> dict:
        return {"template": self.spread.draw(self.random_generator) if self.spread is not None else None}

    def apply(self, img: np.ndarray, template=None, **params) -> np.ndarray:
        if template is None:
            return img
        return standardise(img, tissue_stats(img), template)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("spread",)

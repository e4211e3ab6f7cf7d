"""Training augmentation (albumentations): geometry, stain and noise, image and mask kept aligned.

The set follows the seed notebooks: flips and 90° rotations, shift-scale-rotate, brightness/contrast,
HSV and gamma (stain variation between labs and scanners), CLAHE, Gaussian noise, grid distortion and
GridDropout. Two more make the model lean on shape rather than colour, so that it carries across stains
and patients: stain jitter in the tile's own stain space (``HEStain``, Macenko, in :mod:`.stain`: each stain's amount
scaled and shifted; it serves PAS as well, whose haematoxylin/PAS pair it separates the same way) and,
now and then, a grey tile. Border pixels are reflected so that a rotated tile has no black corners.

``colour="strong"`` widens every colour change (hue over a third of the wheel, stain amounts halved or
doubled, a grey tile one time in four, now and then the colour channels swapped): a recipe alternative for
slides of another stain or lab, where the model must find glomeruli by their shape alone.
``colour="stain"`` is the step between the two: ``strong``'s stain jitter (amounts halved to doubled, on the
tile's own colours, first) with ``standard``'s hue, brightness and grey tiles.
``colour="randstain"`` puts a RandStainNA step (``LabTemplateTransfer``, in :mod:`.stain`) in place of the stain
jitter: seven tiles in ten have their tissue colour moved onto a template drawn from the spread of the training
images' own colours (``lab_spread``, every source weighted alike), so a lab's stain is seen in the others' colours
and between; then ``standard``'s hue, brightness and grey tiles.
"""

from __future__ import annotations

import warnings


COLOUR_AUGMENTS = ("standard", "stain", "strong", "randstain")


def training_augmentation(tile: int, strength: float = 1.0, colour: str = "standard", lab_spread=None):
    """The albumentations pipeline for ``tile`` px crops; ``strength`` 0 gives flips only; ``colour`` is one
    of :data:`COLOUR_AUGMENTS`; ``lab_spread`` (a :class:`~napari_hubmap.stain_standard.LabSpread`, the training
    images' colours) is where ``randstain`` draws its templates (None: that step passes tiles through)."""
    if colour not in COLOUR_AUGMENTS:
        raise ValueError(f"colour must be one of {', '.join(COLOUR_AUGMENTS)}, got {colour!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # albumentations' version check and pydantic notes
        import albumentations as A
        import cv2

        from . import stain

    p = max(0.0, min(1.0, strength))
    reflect = cv2.BORDER_REFLECT_101
    return A.Compose([*_geometry(A, tile, p, reflect), *_colour(A, stain, p, colour, lab_spread),
                      A.GaussNoise(std_range=(0.02, 0.06), p=0.2 * p),
                      A.GridDistortion(num_steps=5, distort_limit=0.2, border_mode=reflect, p=0.2 * p),
                      A.GridDropout(ratio=0.3, unit_size_range=(max(8, tile // 8), max(9, tile // 4)), p=0.1 * p)])


def _geometry(A, tile: int, p: float, reflect: int) -> list:
    return [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        A.Affine(scale=(0.8, 1.25), translate_percent=(-0.0625, 0.0625), rotate=(-30, 30),
                 border_mode=reflect, p=0.6 * p),
    ]


def _wide_stain_jitter(StainJitter, p: float):
    # jittered first, on the tile's own colours: Macenko's fit on a brightened or hue-turned tile can take
    # the glomerulus for background and bleach it white
    return StainJitter(method="macenko", intensity_scale_range=(0.5, 2.0), intensity_shift_range=(-0.3, 0.3),
                       p=0.5 * p)


def _colour(A, stain, p: float, colour: str, lab_spread) -> list:
    StainJitter = stain.StainJitter
    if colour == "strong":
        return [
            _wide_stain_jitter(StainJitter, p),
            A.OneOf([A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3),
                     A.RandomGamma(gamma_limit=(70, 140)), A.CLAHE(clip_limit=3.0)], p=0.7 * p),
            A.HueSaturationValue(hue_shift_limit=30, sat_shift_limit=50, val_shift_limit=20, p=0.8 * p),
            A.ChannelShuffle(p=0.1 * p),
            A.ToGray(p=0.25 * p),
        ]
    standard = [
        A.OneOf([
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2),
            A.RandomGamma(gamma_limit=(80, 120)),
            A.CLAHE(clip_limit=2.0),
        ], p=0.6 * p),
        A.HueSaturationValue(hue_shift_limit=12, sat_shift_limit=25, val_shift_limit=12, p=0.6 * p),
    ]
    if colour == "stain":
        return [_wide_stain_jitter(StainJitter, p), *standard, A.ToGray(p=0.1 * p)]
    if colour == "randstain":  # the template stands in for the stain jitter, whose Macenko fit on a moved
        # tile can take the glomerulus for glass and bleach it white
        return [stain.LabTemplateTransfer(lab_spread, p=0.7 * p), *standard, A.ToGray(p=0.1 * p)]
    return [*standard,
            StainJitter(method="macenko", intensity_scale_range=(0.7, 1.3), intensity_shift_range=(-0.2, 0.2), p=0.3 * p),
            A.ToGray(p=0.1 * p)]

"""Stain standardisation of the training images (:mod:`napari_hubmap.stain_standard`): each image's tissue
moved onto one reference colour, the training images' mean unless the base model's card already has one; and the
spread of their colours, from which ``--colour-augment randstain`` draws its templates."""

from __future__ import annotations

import dataclasses
from collections import Counter

from ..registry.card import ModelCard, stain_reference_of
from ..stain_standard import LabSpread, LabStats, mean_stats, standardise, stats_spread, tissue_stats
from .config import TrainConfig
from .sources import Sample


def standardised_run(config: TrainConfig, card: ModelCard, train: list[Sample],
                     val: list[Sample]) -> tuple[ModelCard, list[Sample], list[Sample]]:
    """The card (with its ``stain_reference``) and the training and validation images moved onto that
    reference; all three unchanged when neither ``config`` nor the base card asks for it."""
    reference = stain_reference_of(card)
    if reference is None and not config.stain_standardise:
        return card, train, val
    if reference is None:
        reference = mean_stats(tissue_stats(s.image) for s in train)
        if reference is None:
            return card, train, val  # no tissue anywhere (synthetic glass): nothing to move
        card = card.replace(stain_reference=reference.as_dict())
    return card, standardised(train, reference), standardised(val, reference)


def standardised(samples: list[Sample], reference: LabStats) -> list[Sample]:
    """Copies of ``samples`` whose images are moved onto ``reference``, each by its own tissue statistics."""
    return [dataclasses.replace(s, image=standardise(s.image, tissue_stats(s.image), reference)) for s in samples]


def colour_spread(samples: list[Sample]) -> LabSpread | None:
    """The spread of the tissue colour of ``samples``, every source weighted alike (as the tile sampler draws
    them), whatever its number of images; None with fewer than two images with tissue."""
    counts = Counter(s.source for s in samples)
    return stats_spread([tissue_stats(s.image) for s in samples], [1.0 / counts[s.source] for s in samples])

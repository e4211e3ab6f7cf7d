"""A slide's tissue colour at a model's working scale, for models trained on stain-standardised images
(:mod:`napari_hubmap.stain_standard`): measured once per run on up to :data:`STAIN_TILES` tissue tiles spread
over the slide, so every tile of the slide is moved onto the card's reference the same way."""

from __future__ import annotations

import numpy as np

from ..registry.card import stain_reference_of
from ..stain_standard import tissue_stats
from .plan import Plan

STAIN_TILES = 24
"""Tissue tiles (of the model's own size and scale, evenly spread over the plan's order) that give a
slide's colour statistics."""


def attach_stain(plan: Plan, open_reader) -> None:
    """Set ``stain_source`` / ``stain_reference`` of each run of ``plan`` whose card has a reference;
    ``open_reader()`` (called only then) gives an object whose ``read(y, x, tile, downscale)`` returns
    working-scale tiles of the slide. A slide without tissue keeps its colours (``stain_source`` None)."""
    reader = None
    for run in plan.runs:
        reference = stain_reference_of(run.model.card)
        if reference is None:
            continue
        reader = reader or open_reader()
        jobs = [job for job in plan.jobs if job.run == run.index and not job.skipped]
        picks = np.unique(np.linspace(0, len(jobs) - 1, min(len(jobs), STAIN_TILES)).round().astype(int)) if jobs else []
        run.stain_source = tissue_stats([reader.read(jobs[i].y, jobs[i].x, run.tile, run.downscale) for i in picks])
        run.stain_reference = reference


def stain_settings(run) -> dict:
    """What a run's stain standardisation adds to the store's settings (nothing for a card without one)."""
    if run.stain_reference is None:
        return {}
    return {"stain_source": None if run.stain_source is None else run.stain_source.as_dict()}

"""A network's normalisation statistics adapted to one slide before it is run (AdaBN: Li et al., "Revisiting batch
normalization for practical domain adaptation", 2016).

A network trained here normalises each layer's activations with means and variances measured on its training
tiles. A slide from another lab (another stain, scanner, section thickness) shifts those activations; AdaBN
measures them again on the slide's own tissue, in the model's working tiles, and runs the slide with them. Only
the batch-norm layers' running means and variances change (never a learnt weight), nothing is labelled, and the
slide decides its own statistics, so two slides never share them. :func:`adapted_module` makes the adapted copy;
:func:`adaptation_tiles` picks up to :data:`ADAPT_TILES` tissue tiles spread evenly over a plan's order, as
:mod:`.stain` picks the tiles that give a slide's colour.
"""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import torch
from torch import nn

ADAPT_TILES = 32
"""Tissue tiles (of the model's own size and scale, evenly spread over the plan's order) whose activations give a
slide's normalisation statistics."""
ADAPT_BATCH = 8
"""Tiles per forward pass while measuring (a batch's statistics take in the spread between tiles, as training's do)."""


def norm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers that keep running statistics."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def adapted_module(module: nn.Module, batches) -> nn.Module:
    """A copy of ``module`` (eval mode, its device) whose batch-norm running statistics are the average over
    ``batches`` ((N, C, H, W) float tensors, already normalised as the card says) of each batch's own; ``module``
    itself is left as it was. A network without batch norm, or no batches, gives ``module`` back."""
    if not norm_layers(module):
        return module
    adapted = copy.deepcopy(module).eval()
    layers = norm_layers(adapted)
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the batches, each counted once
        layer.train()
    seen = 0
    with torch.inference_mode(False), torch.no_grad():
        for batch in batches:
            adapted(batch)
            seen += 1
    if not seen:
        return module
    for layer, original in zip(layers, norm_layers(module)):
        layer.momentum = original.momentum
    return adapted.eval()


def adaptation_tiles(jobs: list, count: int = ADAPT_TILES) -> list:
    """Up to ``count`` of ``jobs`` (a run's tissue tiles in plan order), spread evenly over them."""
    if not jobs:
        return []
    picks = np.unique(np.linspace(0, len(jobs) - 1, min(len(jobs), count)).round().astype(int))
    return [jobs[i] for i in picks]


def statistics_digest(module: nn.Module) -> str:
    """A short hash of ``module``'s batch-norm running statistics (what adaptation changed), for a store's
    resume key: a map made with other statistics is redone, never mixed."""
    digest = hashlib.sha256()
    for layer in norm_layers(module):
        for value in (layer.running_mean, layer.running_var):
            digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def attach_adapted(plan, open_reader, device: torch.device) -> None:
    """Give each run of ``plan`` its model with batch-norm statistics measured on the slide's tissue tiles
    (:func:`adaptation_tiles` of the run's unskipped jobs, read by ``open_reader()``'s ``read(y, x, tile, downscale)``,
    stain-standardised and normalised as prediction does). A run without tissue keeps its model."""
    from ..registry import LoadedModel

    reader = None
    for run in plan.runs:
        jobs = adaptation_tiles([job for job in plan.jobs if job.run == run.index and not job.skipped])
        if not jobs:
            continue
        reader = reader or open_reader()
        module = adapted_module(run.model.module, _input_batches(run, jobs, reader, device))
        run.model = LoadedModel(run.model.card, module, run.model.path)
        run.norm_statistics = statistics_digest(module)


def _input_batches(run, jobs: list, reader, device: torch.device):
    """``jobs``' tiles as network input, :data:`ADAPT_BATCH` at a time (read, stain-standardised and normalised as
    the engine prepares a batch)."""
    from ..stain_standard import standardise
    from .normalisation import normalise

    for start in range(0, len(jobs), ADAPT_BATCH):
        tiles = np.stack([standardise(reader.read(j.y, j.x, run.tile, run.downscale), run.stain_source, run.stain_reference)
                          for j in jobs[start : start + ADAPT_BATCH]])
        yield torch.from_numpy(normalise(tiles, run.model.card.normalization)).to(device)

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
ADAPT_MAX_STRIDE: int | None = None
"""How deep adaptation reaches (:func:`adapted_module`): None, every batch-norm layer."""
ADAPT_BATCH = 8
"""Tiles per forward pass while measuring (a batch's statistics take in the spread between tiles, as training's do)."""


def norm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers that keep running statistics."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def adapted_module(module: nn.Module, batches, max_stride: int | None = None) -> nn.Module:
    """A copy of ``module`` (eval mode, its device) whose batch-norm running statistics are the average over
    ``batches`` ((N, C, H, W) float tensors, already normalised as the card says) of each batch's own; ``module``
    itself is left as it was. ``max_stride``: only the layers of the encoder (``module.encoder`` where there is one)
    whose input is at most that many times coarser than the tile (colour and texture; the deeper layers' statistics
    also carry how much of each structure the tiles hold); None: every layer. A network without batch norm, or no
    batches, gives ``module`` back."""
    batches = list(batches)
    if not norm_layers(module) or not batches:
        return module
    adapted = copy.deepcopy(module).eval()
    layers = _layers_to_adapt(adapted, batches[0], max_stride)
    originals = {id(layer): layer.momentum for layer in layers}
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the batches, each counted once
        layer.train()
    with torch.inference_mode(False), torch.no_grad():
        for batch in batches:
            adapted(batch)
    for layer in layers:
        layer.momentum = originals[id(layer)]
    return adapted.eval()


def _layers_to_adapt(module: nn.Module, example: torch.Tensor, max_stride: int | None) -> list:
    """The batch-norm layers :func:`adapted_module` measures again (``module`` in eval mode)."""
    if max_stride is None:
        return norm_layers(module)
    sizes = {}

    def record(layer, args) -> None:  # a pre-hook that returns something replaces the layer's input
        sizes.setdefault(id(layer), args[0].shape[-1])

    hooks = [layer.register_forward_pre_hook(record) for layer in norm_layers(module)]
    try:
        with torch.inference_mode(False), torch.no_grad():
            module(example[:1])
    finally:
        for hook in hooks:
            hook.remove()
    within = getattr(module, "encoder", module)
    width = example.shape[-1]
    return [layer for layer in norm_layers(within) if sizes.get(id(layer), 0) * max_stride >= width]


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
    from ..errors import HubmapInputError
    from ..registry import LoadedModel

    reader = None
    for run in plan.runs:
        jobs = adaptation_tiles([job for job in plan.jobs if job.run == run.index and not job.skipped])
        if not jobs:
            continue
        if not isinstance(run.model.module, nn.Module):
            raise HubmapInputError(run.model.path, f"model {run.model.card.name!r} is loaded as an ONNX graph, whose "
                                   "batch-norm statistics are folded in: load it for torch to adapt them")
        reader = reader or open_reader()
        module = adapted_module(run.model.module, _input_batches(run, jobs, reader, device), ADAPT_MAX_STRIDE)
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

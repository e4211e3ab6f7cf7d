"""Plan: the tiles each model sees at its working scale, where they land on the output grid, batches.

Every model reads the slide at its own working downscale d (full-resolution pixels per working
pixel) with its own tile and overlap; d < 1 (a slide coarser than the model's working scale) means
upsampled tiles. The output grid is at the finest working scale of the ensemble but never finer than
the slide (downscale >= 1); a coarser model's tiles, or upsampled ones, are resized onto it. Jobs are
sorted by their first output row so finished rows can be written out while the rest of the slide is
still being processed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..slide.scale import SlideScale
from .tissue import TissueMask


@dataclass
class ModelRun:
    """One ensemble member as the engine runs it."""

    index: int
    model: object  # registry.LoadedModel
    downscale: float
    tile: int
    overlap: int
    out_scale: float = 1.0  # output pixels per working pixel
    stain_source: object = None  # the slide's tissue colour (stain_standard.LabStats) when the card has a reference
    stain_reference: object = None  # the card's reference colour (LabStats)

    @property
    def out_tile(self) -> int:
        return int(round(self.tile * self.out_scale))


@dataclass
class TileJob:
    run: int  # index into Plan.runs
    y: int  # top-left in working pixels
    x: int
    out_y0: int
    out_x0: int
    out_size: int
    skipped: bool = False

    @property
    def out_y1(self) -> int:
        return self.out_y0 + self.out_size


@dataclass
class Plan:
    slide_shape: tuple[int, int]
    out_downscale: float
    out_shape: tuple[int, int]
    runs: list[ModelRun]
    jobs: list[TileJob]
    batches: list[list[TileJob]] = field(default_factory=list)
    tissue: TissueMask | None = None
    scale: SlideScale | None = None  # the slide's µm/px the working downscales follow
    batch_size: int = 1  # computed tiles per batch

    @property
    def skipped(self) -> int:
        return sum(job.skipped for job in self.jobs)

    def band(self, first: int, end: int) -> "Plan":
        """This plan cut to the jobs whose output reaches rows [first, end): the same tiles and the same
        order as the whole plan, so the band's rows come out as the whole run makes them."""
        jobs = [job for job in self.jobs if job.out_y0 < end and job.out_y1 > first]
        return Plan(self.slide_shape, self.out_downscale, self.out_shape, self.runs, jobs,
                    _batches(jobs, self.batch_size), self.tissue, self.scale, self.batch_size)

    def first_rows_after(self) -> list[int]:
        """For each batch b, the smallest first output row of the jobs in batches after b."""
        rows = [self.out_shape[0]] * len(self.batches)
        lowest = self.out_shape[0]
        for b in range(len(self.batches) - 1, -1, -1):
            rows[b] = lowest
            lowest = min(lowest, min(job.out_y0 for job in self.batches[b]))
        return rows


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering [0, length) with the given overlap; the last tile ends at length. A slide no longer
    than one tile sits in the middle of it (a negative origin: the reader mirrors the slide around it, as training
    pads small images), not in its corner: the network draws glomeruli at a slide's edges better with the mirror
    on every side (measured: ``benchmarks/generalisation.py score --through predict``)."""
    if length <= tile:
        return [-((tile - length) // 2)]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def make_plan(slide_shape, runs: list[ModelRun], tissue: TissueMask | None, batch_size: int,
              scale: SlideScale | None = None) -> Plan:
    height, width = slide_shape
    out_downscale = max(1.0, min(run.downscale for run in runs))
    out_shape = (math.ceil(height / out_downscale), math.ceil(width / out_downscale))
    jobs = []
    for run in runs:
        run.out_scale = run.downscale / out_downscale
        jobs.extend(_model_jobs(run, slide_shape, tissue))
    jobs.sort(key=lambda j: (j.out_y0, j.run, j.out_x0))
    plan = Plan(slide_shape, out_downscale, out_shape, runs, jobs, tissue=tissue, scale=scale, batch_size=batch_size)
    plan.batches = _batches(jobs, batch_size)
    return plan


def _model_jobs(run: ModelRun, slide_shape, tissue: TissueMask | None) -> list[TileJob]:
    d = run.downscale
    work_h, work_w = (math.ceil(s / d) for s in slide_shape)
    jobs = []
    for y in tile_starts(work_h, run.tile, run.overlap):
        for x in tile_starts(work_w, run.tile, run.overlap):
            skipped = tissue is not None and not tissue.any_in(y * d, (y + run.tile) * d, x * d, (x + run.tile) * d)
            out_y0, out_x0 = int(round(y * run.out_scale)), int(round(x * run.out_scale))
            jobs.append(TileJob(run.index, y, x, out_y0, out_x0, run.out_tile, skipped))
    return jobs


def _batches(jobs: list[TileJob], batch_size: int) -> list[list[TileJob]]:
    """Consecutive jobs, at most ``batch_size`` computed ones of one model each; skipped jobs ride along."""
    batches: list[list[TileJob]] = []
    current: list[TileJob] = []
    computed, model = 0, None
    for job in jobs:
        if not job.skipped and current and (computed == batch_size or (model is not None and job.run != model)):
            batches.append(current)
            current, computed, model = [], 0, None
        current.append(job)
        if not job.skipped:
            computed += 1
            model = job.run
    if current:
        batches.append(current)
    return batches


def gaussian_window(size: int, sigma_scale: float = 1 / 8) -> np.ndarray:
    """2-D Gaussian importance map (max 1) for blending overlapping tiles.

    No floor: near the slide's border, where only tile edges cover a pixel, the tile whose centre
    is nearer still wins by the Gaussian ratio (a constant floor would tie them).
    """
    centre = (size - 1) / 2
    axis = np.exp(-0.5 * ((np.arange(size) - centre) / (size * sigma_scale)) ** 2)
    axis = axis / axis.max()
    return np.maximum(np.outer(axis, axis), 1e-30).astype(np.float32)


def centre_window(size: int, overlap: int, edge: float = 1e-3) -> np.ndarray:
    """Keep the tile centre (margins of overlap/2 dropped); separable, so at the slide's border the
    tile that holds a pixel in its centre along one axis beats one that holds it in no axis."""
    axis = np.full(size, edge, dtype=np.float32)
    margin = overlap // 2
    axis[margin : size - margin] = 1.0
    return np.outer(axis, axis)

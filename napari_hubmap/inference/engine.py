"""Tiled ensemble inference over a whole slide: plan -> read -> infer -> blend -> write.

Reader threads (each with its own open slide) read and normalise the next batches while the
model runs; predictions of every model and TTA transform are averaged, blended with Gaussian (or
centre-crop) weights onto one output grid and streamed to a uint8 OME-Zarr, rows at a time.
A re-run with the same settings resumes after the last finished rows; ``cancel`` stops after the
current batch, leaves a readable store (which the next run resumes) and raises
:class:`~napari_hubmap.progress.Cancelled`. Memory is bounded by tiles and a few output bands.
The working scales follow the slide's µm/px (:mod:`napari_hubmap.slide.scale`: given, else the file's,
else assumed, with a warning); a slide coarser than a model's working scale is read at full
resolution and upsampled. A run holds the store's write lock (:func:`store_lock`): a second run into the
same store gets one error naming the first.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import HubmapInputError
from ..locks import FolderLock
from ..progress import Cancelled, ProgressCallback, report
from ..slide import SlideScale, check_mpp, open_slide
from ..stain_standard import standardise
from ..stores.probability import CHUNK, BandWriter, ProbabilityStore, band_ranges
from .accumulate import RowAccumulator
from .config import InferenceConfig
from .normalisation import normalise
from .onnx_backend import OnnxModule, resolve_backend, runtime_models
from .plan import ModelRun, Plan, centre_window, gaussian_window, make_plan
from .stain import attach_stain, stain_settings
from .tile_reader import TileReader
from .tissue import detect_tissue
from .tta import apply, card_picks, invert, resolve_tta


@dataclass
class PredictionResult:
    path: Path
    tiles: int
    skipped: int
    computed: int
    seconds: float
    tiles_per_s: float
    resumed_rows: int
    complete: bool
    downscale: float = 1.0  # of the map's level 0
    scale: SlideScale | None = None  # the slide's µm/px the run used
    backend: str = "torch"  # what ran the network (torch or onnx)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise HubmapInputError(None, "--device cuda asked for, but no CUDA GPU is available")
    return torch.device(device)


def _load(model, device: torch.device):
    if hasattr(model, "card") and hasattr(model, "module"):
        model.module.to(device).eval()
        return model
    from ..registry import load_model

    return load_model(model, device=str(device))


def forward_batch_size(config: InferenceConfig, device: torch.device) -> int:
    """Tiles per forward call. On CPU one tile at a time: throughput per tile does not grow with the
    batch there, while activation memory does (a 512-tile U-Net-ResNet18 needs ~110 MB per tile)."""
    if config.forward_batch is not None:
        if config.forward_batch < 1:
            raise HubmapInputError(None, f"forward_batch must be at least 1 (got {config.forward_batch})")
        return config.forward_batch
    return 1 if device.type == "cpu" else max(1, config.batch)


def forward_probabilities(
    model, batch: np.ndarray, tta: tuple[str, ...], device: torch.device, chunk: int | None = None,
) -> np.ndarray:
    """Mean foreground probability over TTA transforms: (N, H, W) float32, ``chunk`` tiles per forward (ONNX models
    on a CPU with several threads go through :class:`TileParallel` instead: one tile per forward, several at once)."""
    chunk = chunk or len(batch)
    if len(batch) <= chunk:
        return _forward_chunk(model, batch, tta, device)
    return np.concatenate([_forward_chunk(model, batch[i : i + chunk], tta, device) for i in range(0, len(batch), chunk)])


class TileParallel:
    """Tiles of a batch forwarded side by side, each on one thread (ONNX Runtime releases the GIL): on a CPU
    this keeps every core busy where one tile spread over all of them leaves them waiting on each other."""

    def __init__(self, workers: int):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tile-forward")

    @staticmethod
    def for_models(models: list, device: torch.device) -> "TileParallel | None":
        """One for ONNX models on a CPU with more than one thread, else None (torch runs tiles one by one)."""
        threads = max((m.module.threads for m in models if isinstance(m.module, OnnxModule)), default=1)
        return TileParallel(threads) if device.type == "cpu" and threads > 1 else None

    def submit(self, model, batch: np.ndarray, tta: tuple[str, ...], device: torch.device) -> list:
        """Start the batch's tiles, one task each, behind those already queued: the engine queues the next batch
        before it blends this one, so the threads never wait for the blending between batches."""
        single = model.module.single_threaded((1, *batch.shape[2:]))  # one tile a call; flips and 90° turns keep it
        return [self.pool.submit(_forward_chunk, model, batch[i : i + 1], tta, device, single) for i in range(len(batch))]

    @staticmethod
    def gather(futures: list) -> np.ndarray:
        return np.concatenate([future.result() for future in futures])

    def __enter__(self) -> "TileParallel":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True)


def _forward_chunk(model, batch: np.ndarray, tta: tuple[str, ...], device: torch.device, module=None) -> np.ndarray:
    """``module``: what runs the network in place of ``model.module`` (its single-threaded twin)."""
    module = model.module if module is None else module
    x = torch.from_numpy(batch).to(device)
    cuda = device.type == "cuda"
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    total = None
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
        for name in tta:
            out = invert(name, module(apply(name, x))).float()
            prob = foreground(out, model.card)
            total = prob if total is None else total + prob
    return (total / len(tta)).cpu().numpy()


def foreground(out: torch.Tensor, card) -> torch.Tensor:
    if out.shape[1] == 1:
        return torch.sigmoid(out[:, 0]) if card.output == "logits" else out[:, 0]
    probs = torch.softmax(out, dim=1) if card.output == "logits" else out
    return probs[:, 1]


def settings_of(slide_path: str, plan: Plan, config: InferenceConfig, tta: tuple[str, ...],
                backend: str = "torch") -> tuple[dict, str]:
    stat = os.stat(slide_path)
    settings = {
        "slide": os.path.realpath(slide_path),
        "slide_size": stat.st_size,
        "slide_mtime_ns": stat.st_mtime_ns,
        "models": [
            {"name": r.model.card.name, "path": str(r.model.path), "weights_sha256": r.model.card.weights_sha256,
             "downscale": r.downscale, "tile": r.tile, "overlap": r.overlap, "threshold": picks[0],
             "min_object_um2": r.model.card.min_object_um2, "outline_threshold": picks[1], **stain_settings(r)}
            for r, picks in ((r, card_picks(r.model.card, tta)) for r in plan.runs)
        ],
        "tta": list(tta),
        "backend": backend,
        "blend": config.blend,
        "beyond_edge": "mirror",  # tiles crossing the slide's edge (:func:`beyond_edge`); white before 2026-12
        "batch": config.batch,
        "skip_background": config.skip_background,
        "tissue_saturation": config.tissue_saturation,
        "out_shape": list(plan.out_shape),
        "out_downscale": plan.out_downscale,
        "slide_shape": list(plan.slide_shape),
        **(plan.scale.as_dict() if plan.scale else {}),
    }
    return settings, settings_digest(settings)


POSTPROCESS_DEFAULTS = ("threshold", "min_object_um2", "outline_threshold")
"""Card fields recorded per model for post-processing, left out of the resume key: they do not change
the map (and stores made before ``min_object_um2`` or ``outline_threshold`` existed keep resuming)."""


def settings_digest(settings: dict) -> str:
    """Hash of what changes the map; the models' post-processing defaults are recorded but left out
    (saving a new default threshold must not throw a finished or half-done map away)."""
    models = [{k: v for k, v in m.items() if k not in POSTPROCESS_DEFAULTS} for m in settings["models"]]
    keyed = {**settings, "models": models}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]


def plan_slide(slide, models: list, config: InferenceConfig) -> Plan:
    runs = []
    for index, model in enumerate(models):
        card = model.card
        downscale = card.working_downscale(slide.scale.mpp)
        tile = config.tile or card.tile
        overlap = card.overlap if config.overlap is None else config.overlap
        if not 0 <= overlap < tile:
            raise HubmapInputError(None, f"overlap must be in [0, tile) (tile {tile}, overlap {overlap})")
        runs.append(ModelRun(index, model, float(downscale), int(tile), int(overlap)))
    tissue = detect_tissue(slide, config.tissue_saturation) if config.skip_background else None
    return make_plan((slide.height, slide.width), runs, tissue, config.batch, slide.scale)


def predict_slide(
    slide_path,
    out,
    config: InferenceConfig | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    models: list | None = None,
    band: tuple[int, int] | None = None,
) -> PredictionResult:
    """Run the ensemble over ``slide_path`` into the probability store ``out`` (resumable).

    ``progress`` gets :class:`~napari_hubmap.progress.Progress` in tiles (of every model; skipped background
    tiles count, a resumed run starts at the tiles it skips; a constant total) after each batch, its
    ``details`` {``tiles_per_s``, ``eta_s``, ``rows_done``: rows of the map final in the store}. ``cancel``
    set: stops after the current batch (or stops a pyramid cache build the run needs) and raises
    :class:`~napari_hubmap.progress.Cancelled`; the store keeps the finished rows and the next run with the
    same settings resumes there.

    ``band`` (first, end): only those output rows, into a store that :func:`prepare_bands` made, while other
    processes fill its other bands (level 0 only; a band is redone whole unless it finished)."""
    config = config or InferenceConfig()
    cancel = cancel or threading.Event()
    with store_lock(out, slide_path, band):
        opened = _open_run(slide_path, out, config, models, cancel)
        plan, store = opened.plan, opened.store
        if band is not None:
            if store.complete or store.band_done(*band):
                return PredictionResult(Path(store.path), 0, 0, 0, 0.0, 0.0, band[1] - band[0], store.complete,
                                        plan.out_downscale, plan.scale, opened.backend)
            store, plan = BandWriter(store, *band), plan.band(*band)
        result = _run(opened.slide_path, plan, store, config, opened.tta, opened.device, progress, cancel)
    result.backend = opened.backend
    return result


def store_lock(out, slide_path, band: tuple[int, int] | None = None) -> FolderLock:
    """The write lock of the probability store ``out`` (beside it: a run may replace the store whole).
    The writers of a store's row bands share it (each its own rows); any other writer holds it alone."""
    name = Path(os.fspath(slide_path)).name
    if band is None:
        return FolderLock(out, f"predicting {name}", beside=True)
    return FolderLock(out, f"predicting rows {band[0]}-{band[1]} of {name}", beside=True, shared=True)


@dataclass
class _OpenedRun:
    """What a run settles before its first tile: models on their device and backend, the plan, the store."""

    slide_path: str
    device: torch.device
    backend: str
    tta: tuple[str, ...]
    plan: Plan
    store: ProbabilityStore


def _open_run(slide_path, out, config: InferenceConfig, models: list | None, cancel: threading.Event) -> _OpenedRun:
    """Check the settings, load the models, plan the slide and open (resume or make) its store."""
    tta = resolve_tta(config.tta)
    device = pick_device(config.device)
    forward_batch_size(config, device)  # bad settings fail before anything is loaded or written
    if config.mpp is not None:
        check_mpp(config.mpp)
    backend = resolve_backend(config.backend, device)
    models = [_load(m, device) for m in (models or config.models)]
    models = runtime_models(models, backend)
    slide_path = os.fspath(slide_path)
    with open_slide(slide_path, mpp=config.mpp) as slide:
        _say_scale(slide.scale, slide_path, models)
        if slide.cache is not None and not slide.level_holds_pixels(len(slide.levels) - 1, exact=False):
            slide.build_cache(cancel=cancel)  # compressed single-level slide: overview levels need the cache
        plan = plan_slide(slide, models, config)
    attach_stain(plan, lambda: TileReader(slide_path))
    settings, digest = settings_of(slide_path, plan, config, tta, backend)
    store = ProbabilityStore.open_for_run(out, plan.out_shape, plan.out_downscale, settings, digest)
    return _OpenedRun(slide_path, device, backend, tta, plan, store)


def prepare_bands(slide_path, out, config: InferenceConfig | None = None, band_rows: int = 8192,
                  models: list | None = None, cancel: threading.Event | None = None) -> list[tuple[int, int]]:
    """Make (or keep, when its settings match) the store of ``slide_path`` for a run split into row bands of
    about ``band_rows`` output rows; returns the bands, for :func:`predict_slide` (``band=``) in any process,
    then :func:`finish_bands`. An empty list: the store is already complete."""
    with store_lock(out, slide_path):
        opened = _open_run(slide_path, out, config or InferenceConfig(), models, cancel or threading.Event())
    return [] if opened.store.complete else band_ranges(opened.plan.out_shape[0], band_rows)


def finish_bands(out, bands: list[tuple[int, int]]) -> None:
    """The lower levels of a store whose bands are all written, then the store complete."""
    with FolderLock(out, "finishing the lower levels", beside=True):
        store = ProbabilityStore.reopen(out)
        if not store.complete:
            store.finish_bands(bands)


def _say_scale(scale: SlideScale, slide_path: str, models: list) -> None:
    """Warn of an assumed or overriding µm/px where it sets a working scale (a card with ``target_mpp``)."""
    said = scale.warning(slide_path)
    if said and any(model.card.target_mpp is not None for model in models):
        warnings.warn(said, stacklevel=3)


def _windows(plan: Plan, blend: str) -> dict[int, np.ndarray]:
    windows = {}
    for run in plan.runs:
        size = run.out_tile
        overlap = int(round(run.overlap * run.out_scale))
        windows[run.index] = gaussian_window(size) if blend == "gaussian" else centre_window(size, overlap)
    return windows


def _run(slide_path, plan, store, config, tta, device, progress, cancel) -> PredictionResult:
    started = time.perf_counter()
    resumed_rows = store.rows_done
    start = next((b for b, batch in enumerate(plan.batches) if any(j.out_y1 > store.rows_done for j in batch)), len(plan.batches))
    accumulator = RowAccumulator(plan.out_shape, CHUNK, store.rows_done, store.end)
    windows = _windows(plan, config.blend)
    chunk = forward_batch_size(config, device)
    first_rows_after = plan.first_rows_after()
    local = threading.local()

    def prepare(batch):
        if not hasattr(local, "reader"):
            local.reader = TileReader(slide_path)
        jobs = [j for j in batch if not j.skipped]
        if not jobs:
            return None
        run = _run_of(plan, jobs)
        tiles = np.stack([standardise(local.reader.read(j.y, j.x, run.tile, run.downscale), run.stain_source,
                                      run.stain_reference) for j in jobs])
        return normalise(tiles, run.model.card.normalization)

    total_jobs = len(plan.jobs)
    done_jobs = sum(len(b) for b in plan.batches[:start])
    computed = 0
    cancelled = False
    parallel = TileParallel.for_models([r.model for r in plan.runs], device) if config.forward_batch is None else None
    with ThreadPoolExecutor(max_workers=max(1, config.readers), thread_name_prefix="tile-reader") as pool, \
            parallel or nullcontext():
        pending, started_batches = {}, {}
        lookahead = max(2, config.readers * 2)
        for b in range(start, min(start + lookahead, len(plan.batches))):
            pending[b] = pool.submit(prepare, plan.batches[b])

        def start_batch(b: int):
            """Batch ``b``'s tiles, read; queued on ``parallel``'s threads when there is one (their futures)."""
            inputs = pending.pop(b).result()
            if b + lookahead < len(plan.batches):
                pending[b + lookahead] = pool.submit(prepare, plan.batches[b + lookahead])
            if parallel is None or inputs is None:
                return inputs
            return parallel.submit(_run_of(plan, plan.batches[b]).model, inputs, tta, device)

        ahead = 0 if parallel is None else 1  # with tile threads: the next batch is queued before this one blends
        for b in range(start, len(plan.batches)):
            if cancel.is_set():
                cancelled = True
                break
            for k in range(b, min(b + ahead + 1, len(plan.batches))):
                if k not in started_batches:
                    started_batches[k] = start_batch(k)
            batch = plan.batches[b]
            _blend_batch(plan, batch, started_batches.pop(b), tta, device, windows, accumulator, chunk)
            computed += sum(not j.skipped for j in batch)
            for y0, rows in accumulator.finished(first_rows_after[b]):
                store.write_rows(y0, rows)
            if accumulator.rows_done != store.rows_done:
                store.mark_rows_done(accumulator.rows_done)
            done_jobs += len(batch)
            if progress is not None:
                elapsed = time.perf_counter() - started
                rate = computed / elapsed if elapsed > 0 else 0.0
                remaining = sum(not j.skipped for bb in plan.batches[b + 1 :] for j in bb)
                report(progress, done_jobs, total_jobs, details={
                    "tiles_per_s": rate, "eta_s": remaining / rate if rate else float("inf"), "rows_done": store.rows_done})
        for future in [*pending.values(), *(f for started in started_batches.values() if isinstance(started, list)
                                             for f in started)]:
            future.cancel()
    seconds = time.perf_counter() - started
    store.save_progress(complete=store.complete)
    if cancelled:  # after the store recorded how far it got: the next run resumes there
        raise Cancelled(f"prediction cancelled after {done_jobs}/{total_jobs} tiles ({seconds:.1f} s); "
                        f"the partial map in {store.path} resumes on the next run")
    return PredictionResult(
        Path(store.path), total_jobs, plan.skipped, computed, seconds, computed / seconds if seconds else 0.0,
        resumed_rows, store.complete, plan.out_downscale, plan.scale,
    )


def _run_of(plan, batch):
    """The model run of a batch's computed tiles (a batch holds one run's tiles)."""
    return plan.runs[next(j for j in batch if not j.skipped).run]


def _blend_batch(plan, batch, inputs, tta, device, windows, accumulator, chunk=None) -> None:
    """Forward the batch's tiles (``inputs``: their arrays, or the futures of :meth:`TileParallel.submit`) and blend
    their probabilities into ``accumulator``."""
    probs = None
    jobs = [j for j in batch if not j.skipped]
    if jobs:
        run = _run_of(plan, jobs)
        if isinstance(inputs, list):
            probs = TileParallel.gather(inputs)
        else:
            probs = forward_probabilities(run.model, inputs, tta, device, chunk)
        if run.out_tile != run.tile:
            resized = F.interpolate(torch.from_numpy(probs)[:, None], size=(run.out_tile,) * 2, mode="bilinear",
                                    align_corners=False, antialias=run.out_tile < run.tile)
            probs = resized[:, 0].numpy()
    computed = iter(range(len(jobs)))
    for job in batch:
        window = windows[job.run]
        values = None if job.skipped else probs[next(computed)]
        accumulator.add(job.out_y0, job.out_x0, values, window)

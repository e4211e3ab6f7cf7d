"""Making and growing a project: init, add a slide, import ground truth, add a prediction.

Every operation checks its inputs before writing, writes the stores it makes atomically (temporary
folder renamed when complete) and writes the manifest last, so a failure leaves the old manifest (and
at worst an unlisted file under the project folder, removed where possible). The long part, post-processing
a slide's primary prediction into pseudo-labels, reports :class:`~napari_hubmap.progress.Progress` and
stops with :class:`~napari_hubmap.progress.Cancelled` (see :func:`add_slide`), which rolls back like a failure.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import atomic_path, settle_background_writes
from ..errors import HubmapInputError
from ..progress import ProgressCallback, check_cancelled, with_message
from ..stores.naming import labels_path, slide_stem
from .locking import changing, project_lock
from .manifest import (
    DEFAULT_DOWNSCALE,
    DEFAULT_TILE,
    MANIFEST,
    SLIDE_ID,
    GroundTruth,
    PredictionEntry,
    Project,
    SlideEntry,
    file_hash,
    now_iso,
    sha256_file,
    working_shape_of,
)
from .review import ReviewState

GT_DIR, PSEUDO_DIR, EDITS_DIR = "ground_truth", "pseudo_labels", "edits"


def init_project(root, *, tile: int = DEFAULT_TILE, downscale: float | None = None, predictions=()) -> Project:
    """A new empty project in ``root`` (made if needed); an existing project there is an error.

    ``downscale`` None: the scale of the probability maps in ``predictions`` (see :func:`working_downscale`),
    else :data:`DEFAULT_DOWNSCALE`. The maps are only read here, to check them before anything is written;
    add them with :func:`add_slide`."""
    root = Path(root)
    if (root / MANIFEST).exists():
        raise HubmapInputError(root / MANIFEST, "already a project; nothing was changed (open it, or choose another folder)")
    if root.exists() and not root.is_dir():
        raise HubmapInputError(root, "exists and is not a folder")
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 16:
        raise HubmapInputError(None, f"tile size must be a whole number >= 16, got {tile!r}")
    usable = isinstance(downscale, (int, float)) and math.isfinite(downscale) and downscale >= 1
    if downscale is not None and not usable:
        raise HubmapInputError(None, f"downscale must be a number >= 1, got {downscale!r}")
    downscale = working_downscale(predictions, downscale)
    with project_lock(root, "making the project"):
        if (root / MANIFEST).exists():  # made meanwhile by another process
            raise HubmapInputError(root / MANIFEST, "already a project; nothing was changed (open it, or choose another folder)")
        stamp = now_iso()
        project = Project(root=root, tile_size=int(tile), downscale=float(downscale), created=stamp, modified=stamp)
        project.review = ReviewState(project)
        project.save()
    return project


def working_downscale(predictions=(), downscale: float | None = None) -> float:
    """A project's working scale: ``downscale`` when given, else the finest of the probability maps' own
    downscales at which every map has a level, else :data:`DEFAULT_DOWNSCALE` (no maps). A map without a level
    at the scale chosen is an error."""
    maps = [(Path(prob), *_map_scales(Path(prob))) for prob in predictions]
    if downscale is None and maps:
        shared = [d for d in sorted(m[1] for m in maps) if all(_map_level(*m[1:], d) is not None for m in maps)]
        downscale = shared[0] if shared else maps[0][1]
    downscale = DEFAULT_DOWNSCALE if downscale is None else float(downscale)
    for prob, d, n in maps:
        _checked_level(prob, d, n, downscale)
    return downscale


def _map_scales(prob: Path) -> tuple[float, int]:
    """(downscale of level 0, number of levels) of a probability map."""
    from ..stores.probability import open_probability

    levels, meta = open_probability(prob)
    return float(meta.get("downscale", 1.0)), len(levels)


def _map_level(d: float, n: int, downscale: float) -> int | None:
    """The level of a map (level 0 at downscale ``d``, each next one halved; ``n`` levels) at ``downscale``."""
    return next((k for k in range(n) if math.isclose(d * 2**k, downscale)), None)


def _checked_level(prob: Path, d: float, n: int, downscale: float) -> int:
    level = _map_level(d, n, downscale)
    if level is None:
        raise HubmapInputError(prob, f"map at downscale {d:g} has no level at the project's working downscale "
                               f"{downscale:g} (init the project with --downscale {d:g})")
    return level


def add_slide(project: Project, slide, *, slide_id: str | None = None, ground_truth=None, predictions=(),
              full_hash: bool = False, rle_id: str | None = None, mpp: float | None = None,
              progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> SlideEntry:
    """Add ``slide`` (read to learn its size and µm/px; hashed), optionally its ground truth (any
    annotation format) and probability maps (the first is post-processed into pseudo-labels).
    ``mpp``: the slide's µm/px when given (recorded; wins over the file's, see :class:`SlideEntry`).

    ``progress``: the pseudo-labels' post-processing as :func:`~napari_hubmap.postprocess.postprocess_slide`
    reports it (its total grows once), with the message ``pseudo-labels <slide id>``; nothing else reports (no
    prediction: no progress). ``cancel`` set: raises :class:`~napari_hubmap.progress.Cancelled` (checked before
    each part and during the post-processing); the project is left as it was, as after any failure."""
    slide = Path(slide)
    slide_id = slide_id or slide_stem(slide)
    with changing(project, f"adding slide {slide_id}"):
        return _add_slide(project, slide, slide_id, ground_truth, predictions, full_hash, rle_id, mpp, progress, cancel)


def _add_slide(project: Project, slide: Path, slide_id: str, ground_truth, predictions, full_hash: bool,
               rle_id: str | None, mpp: float | None, progress, cancel) -> SlideEntry:
    from ..slide import open_slide

    if not SLIDE_ID.fullmatch(slide_id):
        raise HubmapInputError(slide, f"slide id {slide_id!r} must be letters, digits, '.', '_' or '-' (give --id)")
    if any(s.id == slide_id for s in project.slides):
        raise HubmapInputError(slide, f"the project already has a slide {slide_id!r}; nothing was changed")
    with open_slide(slide, mpp=mpp) as opened:
        shape, scale = (int(opened.height), int(opened.width)), opened.scale
    entry = SlideEntry(id=slide_id, path=project.record(slide), hash=file_hash(slide, full=full_hash), shape=shape,
                       mpp=None if scale.assumed else scale.mpp, edits=f"{EDITS_DIR}/{slide_id}.zarr", added=now_iso(),
                       mpp_source=None if scale.assumed else scale.source, mpp_file=scale.file_mpp)
    project.slides.append(entry)
    made: list[Path] = []
    try:
        if ground_truth is not None:
            check_cancelled(cancel, f"adding slide {slide_id!r} cancelled")
            made += _import_ground_truth(project, entry, Path(ground_truth), rle_id)
        for prediction in predictions or ():
            made += _add_prediction(project, entry, Path(prediction), progress=progress, cancel=cancel)
        check_cancelled(cancel, f"adding slide {slide_id!r} cancelled")
        project.save()
    except BaseException:
        project.slides.remove(entry)
        _remove(made)
        raise
    return entry


def import_ground_truth(project: Project, slide_id: str, annotation, *, rle_id: str | None = None) -> GroundTruth:
    """Import (or replace) a slide's ground truth."""
    with changing(project, f"importing the ground truth of {slide_id}"):
        entry = project.slide(slide_id)
        old = entry.ground_truth
        made = []
        try:
            made = _import_ground_truth(project, entry, Path(annotation), rle_id, commit=project.save)
        except BaseException:
            entry.ground_truth = old
            _remove([m for m in made if old is None or project.record(m) not in (old.file, old.labels)])
            raise
        return entry.ground_truth


def add_prediction(project: Project, slide_id: str, prob, *, threshold: float | None = None, config=None,
                   progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> PredictionEntry:
    """Add a probability map to a slide (the first one becomes the primary, post-processed into
    pseudo-labels with ``config``, else the threshold (default: the recorded one) and the models'
    recorded minimum size at the map level used). ``progress`` and ``cancel``: as in :func:`add_slide`."""
    with changing(project, f"adding a prediction to {slide_id}"):
        entry = project.slide(slide_id)
        made = []
        try:
            made = _add_prediction(project, entry, Path(prob), threshold=threshold, config=config, progress=progress,
                                   cancel=cancel)
            project.save()
        except BaseException:
            entry.predictions = [p for p in entry.predictions if project.resolve(p.path) != Path(prob)]
            _remove(made)
            raise
        return entry.predictions[-1]


def _remove(paths) -> None:
    settle_background_writes()  # zarr's sibling chunk writes of a failed store, else they land after the removal
    for path in paths:
        with contextlib.suppress(OSError):
            shutil.rmtree(path) if Path(path).is_dir() else Path(path).unlink()


# ------------------------------------------------------------------------------------------ ground truth


def _import_ground_truth(project: Project, entry: SlideEntry, source: Path, rle_id: str | None,
                         commit: Callable[[], None] | None = None) -> list[Path]:
    """Copy ``source`` into the project and rasterise it; ``entry.ground_truth`` records them. ``commit`` (the
    manifest's save) runs before the new files replace the old ones, so a failure leaves the old pair as the
    manifest records it."""
    from ..stores.labels import LabelsStoreWriter

    if not source.exists():
        raise HubmapInputError(source, "ground truth not found")
    labels = rasterise_ground_truth(source, entry.shape, project.downscale, rle_id=rle_id)
    suffix = ".zarr" if source.is_dir() else source.suffix.lower()
    copy = project.root / GT_DIR / f"{entry.id}{suffix}"
    store = labels_path(entry.id, project.root / GT_DIR)
    made = [copy, store]
    # the copy is renamed into place only after the labels store: a failed write (disk full) of either
    # leaves neither, nor a new copy beside the old labels
    with atomic_path(copy, is_dir=source.is_dir()) as copied:
        digest = _copy_ground_truth(source, copied)
        with atomic_path(store, is_dir=True) as tmp:
            writer = LabelsStoreWriter(tmp, labels.shape, project.downscale,
                                       {"slide_shape": list(entry.shape), "source": str(source), "slide": entry.id},
                                       name=store.name)
            block = 2048
            for y0 in range(0, labels.shape[0], block):
                for x0 in range(0, labels.shape[1], block):
                    part = labels[y0 : y0 + block, x0 : x0 + block]
                    if part.any():
                        writer.write_block(y0, x0, part)
            areas = object_areas(labels)
            objects = int(areas.size)
            writer.finish(objects=objects)
            median = float(np.median(areas)) if areas.size else None
            entry.ground_truth = GroundTruth(file=project.record(copy), original=str(source.resolve()), sha256=digest,
                                             labels=project.record(store), objects=objects, rle_id=rle_id,
                                             median_area=median)
            if commit is not None:
                commit()
    return made


def _copy_ground_truth(source: Path, tmp: Path) -> str:
    """Copy the annotation file (or folder) to ``tmp``; returns its SHA-256 ("" for a folder)."""
    if source.is_dir():
        shutil.rmtree(tmp)
        shutil.copytree(source, tmp)
        return ""
    shutil.copyfile(source, tmp)
    return sha256_file(tmp)


def object_areas(labels: np.ndarray) -> np.ndarray:
    """Pixel counts of the objects (nonzero labels) of a label image."""
    top = int(labels.max()) if labels.size else 0
    if top == 0:
        return np.zeros(0, np.int64)
    if top < 50_000_000:
        counts = np.bincount(labels.ravel())[1:]
        return counts[counts > 0]
    values, counts = np.unique(labels[labels > 0], return_counts=True)
    return counts


def rasterise_ground_truth(source: Path, full_shape, downscale: float, *, rle_id: str | None = None) -> np.ndarray:
    """Instance labels (uint32) of any annotation file on the working grid ceil(full / downscale).

    Polygons (.json/.geojson) and Kaggle RLE (.csv) are rasterised there; a mask image or labels
    store must be at the working scale or at full resolution (then sampled at pixel centres)."""
    from ..annotations import MASK_SUFFIXES, load_labels
    from ..stores.labels import open_labels

    shape = working_shape_of(full_shape, downscale)
    suffix = source.suffix.lower()
    if suffix == ".zarr" or source.is_dir():
        levels, meta = open_labels(source)
        d = float(meta.get("downscale", 1.0))
        picked = [lv for k, lv in enumerate(levels) if math.isclose(d * 2**k, downscale)]
        if not picked:
            raise HubmapInputError(source, f"labels at downscale {d:g} have no level at the project's working downscale {downscale:g}")
        labels = np.asarray(picked[0])
    elif suffix in MASK_SUFFIXES:
        labels, _ = load_labels(source, None)
        if labels.shape == tuple(full_shape) and labels.shape != shape:
            rows, cols = (np.minimum(((np.arange(n) + 0.5) * downscale).astype(np.int64), f - 1) for n, f in zip(shape, full_shape))
            labels = labels[np.ix_(rows, cols)]
    else:
        labels, _ = load_labels(source, tuple(full_shape), downsample=downscale, rle_id=rle_id)
    if labels.dtype == bool:
        from skimage import measure

        labels = measure.label(labels, connectivity=2)
    if tuple(labels.shape) != tuple(shape):
        raise HubmapInputError(source, f"ground truth is {labels.shape[0]}x{labels.shape[1]}; the slide "
                               f"{full_shape[0]}x{full_shape[1]} at downscale {downscale:g} needs {shape[0]}x{shape[1]} "
                               "(or full resolution)")
    if labels.size and labels.min() < 0:
        raise HubmapInputError(source, "labels must not be negative")
    return labels.astype(np.uint32, copy=False)


# ------------------------------------------------------------------------------------------ predictions


def _add_prediction(project: Project, entry: SlideEntry, prob: Path, *, threshold: float | None = None, config=None,
                    progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> list[Path]:
    from ..postprocess import PostprocessConfig, postprocess_slide
    from ..postprocess.slide import recorded_defaults
    from ..stores.probability import open_probability

    levels, meta = open_probability(prob)
    level = _checked_level(prob, float(meta.get("downscale", 1.0)), len(levels), project.downscale)
    shape = working_shape_of(entry.shape, project.downscale)
    if tuple(levels[level].shape) != tuple(shape):
        raise HubmapInputError(prob, f"map is {tuple(levels[level].shape)} at downscale {project.downscale:g}; slide "
                               f"{entry.id!r} ({entry.shape[0]}x{entry.shape[1]}) needs {shape}: a map of another slide?")
    if any(project.resolve(p.path).resolve() == prob.resolve() for p in entry.predictions):
        raise HubmapInputError(prob, f"already a prediction of slide {entry.id!r}")
    if config is None:
        config = PostprocessConfig(**{**recorded_defaults(meta, level),
                                      **({"threshold": threshold} if threshold is not None else {})})
    elif threshold is not None:
        config = PostprocessConfig(**{**config.as_dict(), "threshold": threshold})
    made: list[Path] = []
    pseudo = None
    if not entry.predictions:
        out = labels_path(entry.id, project.root / PSEUDO_DIR)
        out.parent.mkdir(parents=True, exist_ok=True)
        postprocess_slide(prob, out, config, level=level, progress=with_message(progress, f"pseudo-labels {entry.id}"),
                          cancel=cancel)
        made.append(out)
        pseudo = project.record(out)
    models = [dict(m) for m in meta.get("models", []) if isinstance(m, dict)]
    entry.predictions.append(PredictionEntry(path=project.record(prob), level=level, threshold=config.threshold,
                                             models=models, pseudo_labels=pseudo, postprocess=config.as_dict()))
    for model in models:
        summary = {k: model.get(k) for k in ("name", "path", "weights_sha256") if k in model}
        if summary and summary not in project.models:
            project.models.append(summary)
    return made

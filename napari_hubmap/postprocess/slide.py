"""Post-processing of a whole-slide probability store into a labels store, block by block.

Never loads the whole map: pass 1 reads it block by block, pass 2 reads each object's padded box
(through a chunk cache), pass 3 writes the labels block by block into a temporary OME-Zarr that is
renamed onto the output only when complete. Memory: the compressed object masks, a few numbers per
object, and a few rows of decompressed chunks. A cancelled (:class:`~napari_hubmap.progress.Cancelled`) or
failed run leaves no output (an older output at that path stays as it was). A run holds the output's write
lock (:class:`~napari_hubmap.locks.FolderLock`, beside it): a second run into the same output gets one error
naming the first.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_path
from ..locks import FolderLock
from ..errors import HubmapInputError
from ..progress import ProgressCallback, Steps
from ..slide.scale import MPP_SOURCES, SCALE_KEYS, recorded_scale
from ..stores.labels import LabelsStoreWriter, check_full_shape, is_labels_store
from ..stores.probability import open_probability
from .config import BLOCK, PostprocessConfig
from .pipeline import instances, paint_blocks, total_steps
from .region import check_probability
from .source import BlockSource


@dataclass
class PostprocessResult:
    """What :func:`postprocess_slide` did: objects written, time, throughput at the labels' scale."""

    out: Path
    objects: int
    shape: tuple[int, int]
    downscale: float
    seconds: float
    megapixels_per_s: float
    slide_shape: tuple[int, int] | None

    def as_dict(self) -> dict:
        return {
            "out": str(self.out), "objects": self.objects, "shape": list(self.shape), "downscale": self.downscale,
            "seconds": round(self.seconds, 3), "megapixels_per_s": round(self.megapixels_per_s, 3),
            "slide_shape": list(self.slide_shape) if self.slide_shape else None,
        }


def slide_shape_of(meta: dict) -> tuple[int, int] | None:
    """Full-resolution (H, W) of the slide a probability store was made from, when it can be known:
    a recorded ``slide_shape``, else the slide file named in the settings if it is still there."""
    shape = meta.get("slide_shape")
    if shape:
        return int(shape[0]), int(shape[1])
    slide = meta.get("slide")
    if slide and os.path.isfile(slide):
        from ..slide import open_slide

        try:
            with open_slide(slide) as opened:
                return int(opened.height), int(opened.width)
        except HubmapInputError:
            return None
    return None


def recorded_threshold(meta: dict) -> float | None:
    """The models' card threshold recorded in a probability store, when they all agree."""
    values = {float(m["threshold"]) for m in meta.get("models", []) if isinstance(m, dict) and "threshold" in m}
    return values.pop() if len(values) == 1 else None


def recorded_outline(meta: dict) -> float | None:
    """The models' card outline threshold recorded in a probability store, when every model records the same one."""
    values = {m.get("outline_threshold") for m in meta.get("models", []) if isinstance(m, dict)}
    value = values.pop() if len(values) == 1 else None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
    return float(value) if ok else None


def recorded_defaults(meta: dict, level: int = 0) -> dict:
    """:class:`PostprocessConfig` fields a probability store's models record: their card ``threshold`` (else
    the default), ``min_size`` at ``level`` (:func:`recorded_min_size`) and ``outline_threshold``."""
    threshold = recorded_threshold(meta)
    return {"threshold": PostprocessConfig.threshold if threshold is None else threshold,
            "min_size": recorded_min_size(meta, level), "outline_threshold": recorded_outline(meta)}


def map_mpp(meta: dict, level: int = 0) -> float | None:
    """µm per pixel of a probability store's ``level``: the slide's µm/px as predict recorded it (given,
    the file's, or assumed and said so) times the map's downscale; None when the store records none."""
    recorded = meta.get("mpp_source") in MPP_SOURCES and _positive(meta.get("mpp"))
    if not recorded or not _positive(meta.get("downscale")):
        return None
    return recorded_scale(meta).mpp * float(meta["downscale"]) * 2**level


def recorded_min_size(meta: dict, level: int = 0) -> int:
    """The models' smallest glomerulus (card ``min_object_um2``, the largest when they differ) as a
    minimum size in pixels of the map's ``level``; 0 when no model records one or the map's µm/px
    is unknown."""
    models = [m for m in meta.get("models", []) if isinstance(m, dict)]
    areas = [float(m["min_object_um2"]) for m in models if _positive(m.get("min_object_um2"))]
    mpp = map_mpp(meta, level)
    if not areas or mpp is None:
        return 0
    return math.ceil(round(max(areas) / mpp**2, 6))  # an object of fewer pixels is under the area


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def postprocess_slide(
    prob_path,
    out_path,
    config: PostprocessConfig | None = None,
    *,
    level: int = 0,
    block: int = BLOCK,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    shape: tuple[int, int] | None = None,
    mpp: float | None = None,
) -> PostprocessResult:
    """Labels store ``out_path`` (uint32 OME-Zarr) of probability store ``prob_path`` at ``level``, by ``config``
    (None: what the map's models record, :func:`recorded_defaults`, as ``napari-hubmap postprocess`` does).

    ``prob_path`` may be an OME-Zarr map another tool wrote; ``shape`` (the slide's full-resolution
    (H, W)) and ``mpp`` (its µm/px) then set its scale where its metadata cannot.

    ``progress`` gets :class:`~napari_hubmap.progress.Progress` whose units are blocks read, objects
    processed and blocks written: the total grows, once, by the object count when pass 1 has found them.
    ``cancel`` set: raises :class:`~napari_hubmap.progress.Cancelled`, leaving no output.
    """
    start = time.perf_counter()
    prob_path, out_path = Path(prob_path), Path(out_path)
    levels, meta = open_probability(prob_path, shape=shape, mpp=mpp)
    _check_args(prob_path, out_path, levels, level, block)
    config = config or PostprocessConfig(**recorded_defaults(meta, level))
    with FolderLock(out_path, f"post-processing {prob_path.name}", beside=True):
        prob = levels[level]
        check_probability(prob)
        if not meta.get("progress", {}).get("complete", False):
            warnings.warn(f"{prob_path}: the probability map is not complete (a cancelled or running prediction)", stacklevel=2)
        downscale = float(meta["downscale"]) * 2**level
        shape = tuple(int(s) for s in prob.shape)
        slide_shape = slide_shape_of(meta)
        if slide_shape is not None:
            try:
                check_full_shape(shape, slide_shape, downscale)
            except HubmapInputError:
                slide_shape = None  # the slide changed since; the labels still overlay by downscale
        steps = Steps(total_steps(shape, block), progress, cancel, "post-processing cancelled")
        found = instances(BlockSource(prob), config, block, steps)
        attrs = {"slide_shape": list(slide_shape) if slide_shape else None, "source": str(prob_path), "level": level,
                 "postprocess": config.as_dict(), "slide": meta.get("slide"),
                 **{k: meta[k] for k in SCALE_KEYS if k in meta}}  # the slide's µm/px, as predict recorded it
        with atomic_path(out_path, is_dir=True) as tmp:
            writer = LabelsStoreWriter(tmp, shape, downscale, attrs, name=out_path.name)
            paint_blocks(found, block, writer.write_block, steps)
            steps.check()
            writer.finish(objects=found.count)
    seconds = time.perf_counter() - start
    return PostprocessResult(out_path, found.count, shape, downscale, seconds,
                             shape[0] * shape[1] / 1e6 / max(seconds, 1e-9), slide_shape)


def _check_args(prob_path: Path, out_path: Path, levels, level: int, block: int) -> None:
    if not isinstance(level, int) or not 0 <= level < len(levels):
        raise HubmapInputError(prob_path, f"level must be 0..{len(levels) - 1}, got {level!r}")
    if not isinstance(block, int) or block < 16:
        raise HubmapInputError(None, f"block must be a whole number >= 16, got {block!r}")
    if out_path.resolve() == prob_path.resolve():
        raise HubmapInputError(out_path, "output would replace the probability map it is made from")
    if out_path.suffix.lower() != ".zarr":
        raise HubmapInputError(out_path, "labels output must end in .zarr")
    if out_path.exists() and not is_labels_store(out_path):
        raise HubmapInputError(out_path, "exists and is not a labels store; refusing to replace it")

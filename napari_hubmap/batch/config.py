"""What every slide of a cohort gets (:class:`CohortConfig`) and where its outputs go, each name written once."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HubmapInputError
from ..inference.config import InferenceConfig
from ..postprocess.config import PostprocessConfig
from ..stores.naming import slide_stem

EXPORTS = ("rle-csv", "geojson", "ome-zarr")
EXPORT_SUFFIXES = {"rle-csv": ".rle.csv", "geojson": ".geojson", "ome-zarr": ".ome.zarr"}
DONE_SUFFIX = ".done.json"
COHORT_CSV = "submission.csv"
PROGRESS_TOPIC = "napari-hubmap-cohort-progress"


@dataclass
class CohortConfig:
    """What each slide gets: ``inference`` (its ``models`` are the ensemble), ``postprocess`` (fields of
    :class:`~napari_hubmap.postprocess.PostprocessConfig` to set; the threshold and minimum size left out
    come from the models' cards, as ``napari-hubmap postprocess`` takes them) and ``exports`` (of
    :data:`EXPORTS`)."""

    inference: InferenceConfig = field(default_factory=InferenceConfig)
    postprocess: dict = field(default_factory=dict)
    exports: tuple = ("rle-csv", "geojson")
    band_rows: int = 8192
    """On a cluster, a slide whose map has more rows than this is split into row bands of about this many
    rows, each a task of its own, so several workers share one large slide."""

    def __post_init__(self) -> None:
        fields = {f.name for f in dataclasses.fields(PostprocessConfig)}
        if set(self.postprocess) - fields:
            raise HubmapInputError(None, f"unknown post-processing setting {sorted(set(self.postprocess) - fields)[0]!r}")
        unknown = [e for e in self.exports if e not in EXPORTS]
        if unknown:
            raise HubmapInputError(None, f"unknown export {unknown[0]!r}; choose from {', '.join(EXPORTS)}")

    def key(self) -> str:
        """What a finished slide's record must match to be skipped."""
        data = {"inference": dataclasses.asdict(self.inference),
                "postprocess": self.postprocess,
                "exports": sorted(self.exports)}  # band_rows left out: it does not change the outputs
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def done_path(slide, out_dir) -> Path:
    return Path(out_dir) / f"{slide_stem(slide)}{DONE_SUFFIX}"


def export_path(slide, out_dir, fmt: str) -> Path:
    return Path(out_dir) / f"{slide_stem(slide)}{EXPORT_SUFFIXES[fmt]}"


def tiles_message(tiles: dict) -> str:
    """The cohort's tiles so far, for a progress bar: ``tiles D/T`` over the slides that reported ({stem: [d, t]})."""
    done, total = sum(d for d, _ in tiles.values()), sum(t for _, t in tiles.values())
    return f"tiles {done}/{total}" if total else ""

"""Names on disk, each rule written once: slide stems, the stores' suffixes, the progress file.

A slide ``x.ome.tif`` (or ``x.tif``, ``x.svs``, ...) has the stem ``x``; predict writes its probability
map ``x.prob.zarr`` into the output folder, post-processing writes ``x.labels.zarr`` beside the map,
and a probability store records how far it got in ``progress.json`` inside it.
"""

from __future__ import annotations

from pathlib import Path

PROBABILITY_SUFFIX = ".prob.zarr"
LABELS_SUFFIX = ".labels.zarr"
PROGRESS_FILE = "progress.json"
DOUBLE_SUFFIXES = (PROBABILITY_SUFFIX, LABELS_SUFFIX, ".ome.tiff", ".ome.tif")
"""Suffixes that count as one (any case) when a name loses its extension."""


def slide_stem(path) -> str:
    """A file's name without its extension, the double ones (:data:`DOUBLE_SUFFIXES`) counted as one:
    ``x.ome.tif``, ``x.tif`` and ``x.prob.zarr`` all give ``x`` (slide ids, Kaggle ids, store names)."""
    name = Path(path).name
    for suffix in DOUBLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def probability_path(slide, out_dir) -> Path:
    """Where predict writes the probability map of ``slide``: ``<slide stem>`` + :data:`PROBABILITY_SUFFIX`
    in ``out_dir``."""
    return Path(out_dir) / f"{slide_stem(slide)}{PROBABILITY_SUFFIX}"


def labels_path(stem: str, folder) -> Path:
    """The labels store named ``stem`` (a slide stem or a project's slide id, taken as given) in ``folder``."""
    return Path(folder) / f"{stem}{LABELS_SUFFIX}"


def labels_beside(prob_path) -> Path:
    """Where post-processing writes the labels of probability map ``prob_path``: beside it, same stem."""
    prob_path = Path(prob_path)
    return labels_path(slide_stem(prob_path), prob_path.parent)


def progress_path(store) -> Path:
    """The progress file inside a probability store."""
    return Path(store) / PROGRESS_FILE

"""The arrays a project points at, opened lazily (zarr) and checked against the working-scale grid."""

from __future__ import annotations

import numpy as np

from ..errors import HubmapInputError
from ..stores.labels import open_labels
from ..stores.probability import open_probability
from .edits import EditStore


def _checked(project, slide_id: str, array, path, what: str):
    shape = project.working_shape(slide_id)
    if tuple(int(s) for s in array.shape) != tuple(shape):
        raise HubmapInputError(path, f"{what} of slide {slide_id!r} is {tuple(array.shape)}, the working grid "
                               f"(downscale {project.downscale:g}) is {shape}")
    return array


def ground_truth_array(project, slide_id: str):
    """Level 0 of the rasterised ground truth (uint32 zarr), or None without ground truth."""
    gt = project.slide(slide_id).ground_truth
    if gt is None:
        return None
    path = project.resolve(gt.labels)
    return _checked(project, slide_id, open_labels(path)[0][0], path, "ground truth")


def probability_arrays(project, slide_id: str) -> list:
    """Each prediction's map at the working scale (uint8 zarr), primary first."""
    out = []
    for prediction in project.slide(slide_id).predictions:
        path = project.resolve(prediction.path)
        levels, _ = open_probability(path)
        if prediction.level >= len(levels):
            raise HubmapInputError(path, f"has no level {prediction.level} (the manifest's)")
        out.append(_checked(project, slide_id, levels[prediction.level], path, "prediction"))
    return out


def pseudo_labels_array(project, slide_id: str):
    """Level 0 of the primary prediction's post-processed labels, or None."""
    entry = project.slide(slide_id)
    if not entry.predictions or not entry.predictions[0].pseudo_labels:
        return None
    path = project.resolve(entry.predictions[0].pseudo_labels)
    return _checked(project, slide_id, open_labels(path)[0][0], path, "pseudo-labels")


def open_edits(project, slide_id: str, *, read_only: bool = False, create: bool = True) -> EditStore:
    """The slide's edits store. Made on first use (not read-only) from the ground truth, else the
    pseudo-labels, else zeros; which one is recorded in its attrs (``initialised_from``)."""
    entry = project.slide(slide_id)
    path = project.resolve(entry.edits)
    shape = project.working_shape(slide_id)
    initial, source = None, "zeros"
    if not path.exists() and create and not read_only:
        for name, opener in (("ground_truth", ground_truth_array), ("pseudo_labels", pseudo_labels_array)):
            initial = opener(project, slide_id)
            if initial is not None:
                source = name
                break
    return EditStore.open(path, shape, chunk=512, initial=initial,
                          attrs={"slide": slide_id, "initialised_from": source, "downscale": project.downscale},
                          read_only=read_only, create=create and not read_only)


def copy_into_edits(project, store: EditStore, slide_id: str, tile_key: str, source: str = "pseudo_labels") -> int:
    """Start a correction: copy the tile's ``"pseudo_labels"`` or ``"ground_truth"`` into the edits
    ``store`` (one edit, saved by the next flush). Returns the edit's sequence number."""
    from .tiles import tile_of_key

    openers = {"pseudo_labels": pseudo_labels_array, "ground_truth": ground_truth_array}
    if source not in openers:
        raise HubmapInputError(None, f"source must be one of {', '.join(openers)}, got {source!r}")
    array = openers[source](project, slide_id)
    if array is None:
        raise HubmapInputError(project.manifest_path, f"slide {slide_id!r} has no {source.replace('_', ' ')}")
    t = tile_of_key(project.working_shape(slide_id), project.tile_size, tile_key)
    rows, cols = t.slices
    return store.apply(t.y0, t.x0, np.asarray(array[rows, cols]))

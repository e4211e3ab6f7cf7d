"""Curation projects: slides, ground truth, predictions, pseudo-labels, durable edits, review, training set.

Imports neither Qt nor napari. A project is a folder with a versioned JSON manifest (:mod:`.manifest`)
and zarr stores; edits are saved chunk-wise and survive a hard kill (:mod:`.edits`); tiles are ranked
for review (:mod:`.ranking`), their states kept in ``review.json`` (:mod:`.review`), and the training set
follows from them (:mod:`.dataset`). Names load lazily, so ``napari_hubmap.project.edits`` alone stays
light (numpy and zarr).
"""

from __future__ import annotations

from ..lazy import lazy_exports

_lazy_all, __getattr__ = lazy_exports(__name__, {
    "build": ("add_prediction", "add_slide", "import_ground_truth", "init_project"),
    "create": ("NewSlide", "create_project"),
    "dataset": ("TrainingTile", "read_tile_labels", "training_set"),
    "edits": ("Autosaver", "EditStore", "EditWindow"),
    "layers": ("project_layers",),
    "manifest": ("FORMAT_VERSION", "Project", "file_hash"),
    "ranking": ("TileEntry", "precision_at_k", "rank_tiles", "review_queue"),
    "review": ("STATES", "ReviewState", "set_state"),
    "stores": ("copy_into_edits", "ground_truth_array", "open_edits", "probability_arrays", "pseudo_labels_array"),
    "tiles": ("Tile", "parse_tile_key", "tile_grid"),
})
__all__ = sorted([*_lazy_all, "open_project"])


def open_project(root, *, verify: bool = True):
    """Open the project in ``root`` (see :meth:`.manifest.Project.open`)."""
    from .manifest import Project

    return Project.open(root, verify=verify)

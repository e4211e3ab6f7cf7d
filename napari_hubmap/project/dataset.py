"""The training set a project defines: what the trainer learns from, tile by tile, with provenance.

Per tile of every slide, by review state:

* ``unreviewed``: the ground truth (label_source ``"ground_truth"``), when the slide has one;
* ``dropped``: nothing (the ground truth was marked noisy);
* ``accepted``: the primary prediction's pseudo-labels (``"pseudo_label"``);
* ``corrected``: the labels painted in the slide's edits store (``"corrected"``).

Slides without ground truth contribute only their accepted and corrected tiles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import HubmapInputError
from .tiles import tile_grid, tile_of_key

SOURCES = ("ground_truth", "pseudo_label", "corrected")


@dataclass
class TrainingTile:
    slide: str
    tile: str
    box: tuple[int, int, int, int]  # y0, x0, y1, x1 at the working scale
    label_source: str
    labels: str  # the store the labels come from, as the manifest records it
    provenance: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["box"] = list(self.box)
        return out


def training_set(project) -> list[TrainingTile]:
    """Every tile the trainer learns from, slide by slide, row by row."""
    out: list[TrainingTile] = []
    for entry in project.slides:
        reviewed = project.review.slides.get(entry.id, {})
        primary = entry.predictions[0] if entry.predictions else None
        base = {"slide": entry.id, "slide_path": entry.path, "slide_hash": entry.hash.as_dict(),
                "downscale": project.downscale, "tile_size": project.tile_size}
        for t in tile_grid(project.working_shape(entry.id), project.tile_size):
            review = reviewed.get(t.key)
            state = review["state"] if review else "unreviewed"
            review_info = {"state": state, "time": review.get("time") if review else None}
            if state == "dropped":
                continue
            if state == "unreviewed":
                if entry.ground_truth is None:
                    continue
                gt = entry.ground_truth
                prov = {**base, "review": review_info, "ground_truth_file": gt.file, "ground_truth_original": gt.original,
                        "ground_truth_sha256": gt.sha256}
                out.append(TrainingTile(entry.id, t.key, t.box, "ground_truth", gt.labels, prov))
            elif state == "accepted":
                if primary is None or not primary.pseudo_labels:
                    raise HubmapInputError(project.manifest_path, f"tile {t.key} of slide {entry.id!r} is accepted but the slide has no pseudo-labels")
                prov = {**base, "review": review_info, "prediction": primary.path, "threshold": primary.threshold,
                        "postprocess": primary.postprocess, "models": primary.models}
                out.append(TrainingTile(entry.id, t.key, t.box, "pseudo_label", primary.pseudo_labels, prov))
            elif state == "corrected":
                prov = {**base, "review": review_info, "edits": entry.edits}
                out.append(TrainingTile(entry.id, t.key, t.box, "corrected", entry.edits, prov))
    return out


def read_tile_labels(project, item: TrainingTile) -> np.ndarray:
    """The labels of one training tile (working scale), from the store it names."""
    from .stores import ground_truth_array, open_edits, pseudo_labels_array

    t = tile_of_key(project.working_shape(item.slide), project.tile_size, item.tile)
    rows, cols = t.slices
    if item.label_source == "ground_truth":
        return np.asarray(ground_truth_array(project, item.slide)[rows, cols])
    if item.label_source == "pseudo_label":
        return np.asarray(pseudo_labels_array(project, item.slide)[rows, cols])
    if item.label_source == "corrected":
        store = open_edits(project, item.slide, read_only=True)
        return store[rows, cols]
    raise HubmapInputError(None, f"unknown label source {item.label_source!r}")

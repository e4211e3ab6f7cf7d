"""Review state per tile, in ``DIR/review.json`` beside the manifest.

States: ``unreviewed`` (the default: the tile's ground truth, when there is one, is trained on),
``accepted`` (the pseudo-label replaces the ground truth), ``corrected`` (the labels painted in the
edits store are trained on), ``dropped`` (the ground truth is noisy: the tile is left out). The file::

    {"kind": "napari-hubmap-review", "format_version": 1,
     "slides": {"<slide id>": {"<row>,<col>": {"state": "dropped", "time": "2025-...Z",
                                               "note": null, "history": [{"state": ..., "time": ...}]}}}}

Only tiles that were ever reviewed appear. :func:`set_state` re-reads the file under the project's write
lock (:mod:`.locking`; it waits up to :data:`LOCK_WAIT_S` for a change in progress), changes one tile and
writes it atomically, so a command-line review and an open napari session do not lose each other's changes.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text_atomic
from ..errors import HubmapInputError
from ..jsonio import load_json
from .clock import now_iso
from .locking import project_lock
from .tiles import grid_shape, parse_tile_key, tile_grid, tile_of_key

KIND = "napari-hubmap-review"
FORMAT_VERSION = 1
REVIEW = "review.json"
STATES = ("unreviewed", "accepted", "corrected", "dropped")
HISTORY = 20
LOCK_WAIT_S = 2.0
"""How long :func:`set_state` waits for another change of the project (a review by another process) to end."""


class ReviewState:
    """The tiles' states of a project (read-only view; change them with :func:`set_state`)."""

    def __init__(self, project, slides: dict | None = None):
        self.project = project
        self.slides: dict[str, dict[str, dict]] = slides or {}

    @classmethod
    def load(cls, project) -> "ReviewState":
        path = Path(project.root) / REVIEW
        if not path.exists():
            return cls(project)
        return cls(project, _validate(project, path, load_json(path, "review file")))

    def entry(self, slide_id: str, key: str) -> dict | None:
        return self.slides.get(slide_id, {}).get(key)

    def state(self, slide_id: str, key: str) -> str:
        entry = self.entry(slide_id, key)
        return entry["state"] if entry else "unreviewed"

    def tiles_in(self, slide_id: str, state: str) -> list[str]:
        return [k for k, e in self.slides.get(slide_id, {}).items() if e["state"] == state]

    def counts(self, slide_id: str | None = None) -> dict[str, int]:
        """Tiles per state (``unreviewed`` includes tiles never touched), one slide or all."""
        counts = dict.fromkeys(STATES, 0)
        ids = [slide_id] if slide_id is not None else [s.id for s in self.project.slides]
        for sid in ids:
            rows, cols = grid_shape(self.project.working_shape(sid), self.project.tile_size)
            reviewed = [e["state"] for e in self.slides.get(sid, {}).values() if e["state"] != "unreviewed"]
            for state in reviewed:
                counts[state] += 1
            counts["unreviewed"] += rows * cols - len(reviewed)
        return counts

    def as_dict(self) -> dict:
        return {"kind": KIND, "format_version": FORMAT_VERSION, "slides": self.slides}


def _validate(project, path: Path, data) -> dict:
    def fail(problem):  # keys are the file's own text: a newline in one must not split the error line
        raise HubmapInputError(path, problem.replace("\r", "\\r").replace("\n", "\\n"))

    if not isinstance(data, dict) or data.get("kind") != KIND:
        fail(f"not a napari-hubmap review file (kind must be {KIND!r})")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        fail(f"format_version must be a whole number >= 1, got {version!r}")
    if version > FORMAT_VERSION:
        fail(f"format_version {version} was written by a newer napari-hubmap; this version reads up to {FORMAT_VERSION}")
    slides = data.get("slides", {})
    if not isinstance(slides, dict):
        fail("slides must be an object")
    known = {s.id for s in project.slides}
    for slide_id, tiles in slides.items():
        if slide_id not in known:
            fail(f"slides.{slide_id}: no such slide in {project.manifest_path}")
        if not isinstance(tiles, dict):
            fail(f"slides.{slide_id} must be an object")
        rows, cols = grid_shape(project.working_shape(slide_id), project.tile_size)
        for key, entry in tiles.items():
            try:
                row, col = parse_tile_key(key)
            except HubmapInputError as exc:
                fail(f"slides.{slide_id}: {exc.problem}")
            if not (row < rows and col < cols):
                fail(f"slides.{slide_id}: tile {key} is outside the {rows}x{cols} grid")
            if not isinstance(entry, dict) or entry.get("state") not in STATES:
                fail(f"slides.{slide_id}.{key}: state must be one of {', '.join(STATES)}")
            if not isinstance(entry.get("history", []), list):  # set_state extends it
                fail(f"slides.{slide_id}.{key}: history must be a list")
    return slides


def set_state(project, slide_id: str, key: str, state: str, *, note: str | None = None) -> dict:
    """Set one tile's state (validated: slide, tile in the grid, state; ``accepted`` needs a
    pseudo-label, ``corrected`` an edits store), write ``review.json`` atomically, and update
    ``project.review``. Returns the tile's new entry."""
    if state not in STATES:
        raise HubmapInputError(None, f"state must be one of {', '.join(STATES)}, got {state!r}")
    entry_slide = project.slide(slide_id)
    tile = tile_of_key(project.working_shape(slide_id), project.tile_size, key)
    key = tile.key
    if state == "accepted" and not (entry_slide.predictions and entry_slide.predictions[0].pseudo_labels):
        raise HubmapInputError(project.manifest_path, f"slide {slide_id!r} has no prediction: there is no pseudo-label to accept")
    if state == "corrected" and not project.resolve(entry_slide.edits).exists():
        raise HubmapInputError(project.resolve(entry_slide.edits),
                               f"slide {slide_id!r} has no edits yet: paint the correction (napari) before marking it corrected")
    root = Path(project.root)
    with project_lock(root, f"reviewing {slide_id}", wait=LOCK_WAIT_S):
        review = ReviewState.load(project)  # what another process wrote meanwhile
        tiles = review.slides.setdefault(slide_id, {})
        old = tiles.get(key)
        history = list(old.get("history", [])) if old else []
        if old:
            history.append({"state": old["state"], "time": old.get("time")})
        new = {"state": state, "time": now_iso(), "note": note, "history": history[-HISTORY:]}
        tiles[key] = new
        write_text_atomic(root / REVIEW, json.dumps(review.as_dict(), indent=1) + "\n")
    project.review = review
    return new


def all_tiles(project, slide_id: str):
    """(tile, state) for every tile of a slide."""
    review = project.review
    return [(t, review.state(slide_id, t.key)) for t in tile_grid(project.working_shape(slide_id), project.tile_size)]

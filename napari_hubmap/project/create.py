"""Making a project with its first slides in one step, all or nothing (``napari-hubmap project init`` and the
Review panel's *New project*).

:func:`create_project` runs :func:`~.build.init_project` and then :func:`~.build.add_slide` for each slide; on
any failure, or :class:`~napari_hubmap.progress.Cancelled`, it removes what it made: the project folder when it
did not exist before, else only the project's own parts that were not there (manifest, review state, the
ground-truth, pseudo-label and edits folders). It never deletes a folder it did not create.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..atomic import settle_background_writes
from ..locks import LOCK_NAME
from ..progress import ProgressCallback
from .build import EDITS_DIR, GT_DIR, PSEUDO_DIR, add_slide, init_project
from .locking import project_lock
from .manifest import DEFAULT_TILE, MANIFEST, Project
from .review import REVIEW

PARTS = (MANIFEST, REVIEW, ".review.lock", LOCK_NAME, GT_DIR, PSEUDO_DIR, EDITS_DIR)
"""What a project holds at its top level: removed on a failed creation when this call made it."""


@dataclass(frozen=True)
class NewSlide:
    """A slide to add to a new project: its file, ground truth (any annotation format) and probability maps
    (the first is post-processed into pseudo-labels)."""

    path: str | Path
    ground_truth: str | Path | None = None
    predictions: tuple = field(default_factory=tuple)


def create_project(root, slides=(), *, tile: int = DEFAULT_TILE, downscale: float | None = None, full_hash: bool = False,
                   mpp: float | None = None, progress: ProgressCallback | None = None,
                   cancel: threading.Event | None = None) -> Project:
    """A new project in ``root`` holding ``slides`` (:class:`NewSlide`, or plain paths), or nothing on failure.

    ``downscale`` None: the scale of all the slides' probability maps, else the default (see
    :func:`~.build.init_project`). ``mpp``: the slides' µm/px, recorded (see :func:`~.build.add_slide`).
    ``progress``: each slide's pseudo-labels as :func:`~.build.add_slide` reports them, one run per slide with a
    prediction, each Progress's ``details`` naming the slide (``{"slide": path}``). ``cancel`` set: raises
    :class:`~napari_hubmap.progress.Cancelled`; like any failure, it leaves ``root`` as it was."""
    root = Path(root)
    slides = [s if isinstance(s, NewSlide) else NewSlide(s) for s in slides]
    with rolled_back_on_failure(root), project_lock(root, "making the project"):
        project = init_project(root, tile=tile, downscale=downscale,
                               predictions=[prob for slide in slides for prob in slide.predictions])
        for slide in slides:
            add_slide(project, slide.path, ground_truth=slide.ground_truth, predictions=list(slide.predictions),
                      full_hash=full_hash, mpp=mpp, progress=_naming(progress, slide.path), cancel=cancel)
    return project


@contextlib.contextmanager
def rolled_back_on_failure(root: Path):
    """Run the block; if it raises (anything, KeyboardInterrupt and Cancelled included), remove the project
    parts of ``root`` it made, and ``root`` itself if it made it, then re-raise."""
    root = Path(root)
    existed = {part: (root / part).exists() for part in PARTS}
    root_existed = root.exists()
    try:
        yield
    except BaseException:
        settle_background_writes()  # zarr's sibling chunk writes of a failed store, else they land after the removal
        if not root_existed:
            shutil.rmtree(root, ignore_errors=True)
        elif root.is_dir():
            for part in [p for p, was_there in existed.items() if not was_there]:
                target = root / part
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
        raise


def _naming(progress: ProgressCallback | None, slide) -> ProgressCallback | None:
    """``progress`` with ``{"slide": slide}`` added to every report's details."""
    if progress is None:
        return None
    return lambda p: progress(replace(p, details={**(p.details or {}), "slide": str(slide)}))

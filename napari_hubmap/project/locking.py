"""The project's write lock: every change to a project (manifest, review state) holds it.

A change takes the project's :class:`~napari_hubmap.locks.FolderLock` (``<project>/.lock``) for its own
duration, so the command line and a viewer may both work on one project, one change at a time; a second
change while one runs (``project add-slide`` post-processing for minutes) gets one error naming it. Nested
changes of one operation (a project made, then given its slides) share the lock. The edits store of each
slide has its own lock, held while a viewer edits it (:mod:`.edits`).

A change to the manifest also needs the project as it is on disk: :func:`changing` refuses a
:class:`~.manifest.Project` whose manifest another process saved after it was opened (its ``modified`` time
differs), since saving it would drop that process's change.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from ..errors import HubmapInputError
from ..locks import FolderLock


def project_lock(root, purpose: str, *, wait: float = 0.0) -> FolderLock:
    """The (reentrant) write lock of the project in ``root``, for ``purpose``."""
    return FolderLock(root, purpose, reentrant=True, wait=wait)


@contextlib.contextmanager
def changing(project, purpose: str):
    """Hold the project's lock while its manifest changes; refuse a stale ``project`` (see the module doc)."""
    with project_lock(project.root, purpose):
        check_current(project)
        yield


def check_current(project) -> None:
    """Raise when the manifest on disk was saved after ``project`` was read (by another process)."""
    path = Path(project.manifest_path)
    try:
        on_disk = json.loads(path.read_text(encoding="utf-8")).get("modified", "")
    except (OSError, ValueError, AttributeError):
        return  # unreadable or gone: saving writes it whole, opening reports what is wrong
    if on_disk != project.modified:
        raise HubmapInputError(path, f"was changed by another process at {on_disk} after this project was opened; "
                               "nothing was changed (open the project again)")

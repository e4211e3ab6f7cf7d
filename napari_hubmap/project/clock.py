"""The one clock of a project: every timestamp it writes (manifest, review, edits) comes from :func:`now_iso`.

Its own module, below :mod:`.manifest` and :mod:`.review`, so that the review file can stamp its changes
without importing the manifest (which imports the review to open a project).
"""

from __future__ import annotations

import datetime as _dt


def now_iso() -> str:
    """UTC time, ISO 8601 with milliseconds (what every timestamp in a project uses)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

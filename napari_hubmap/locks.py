"""One writer at a time: an advisory lock on a project, store or model folder, naming its holder.

:class:`FolderLock` takes an exclusive ``flock`` (``LOCK_EX | LOCK_NB``) on a lock file, then writes the
holder into it (JSON: ``pid``, ``host``, ``program``, ``command``, ``purpose``, ``since``). A second taker
does not wait (unless asked to, ``wait=`` seconds): it gets one :class:`~napari_hubmap.errors.HubmapInputError`,
``<folder>: in use by <program> (pid N on HOST) since <time> for <purpose>; close it or wait``.

Where the lock file lies:

* ``<folder>/.lock`` for a folder that is edited in place and never replaced (a project, an edits store);
* ``<parent>/.<name>.lock`` (``beside=True``) for a target that is written whole and renamed into place
  (probability and labels stores, model folders: :func:`napari_hubmap.atomic.atomic_path`), or that does not
  exist yet; a lock file inside would leave with the old folder.

The rules it keeps:

* **Advisory.** Only the writers of napari-hubmap take it; readers (a viewer showing a store, ``open_project``)
  take none and are never blocked. Another program may still write.
* **A dead holder's lock is free.** The kernel drops a ``flock`` when its process dies (SIGKILL, power loss
  aside), so a lock file a crashed process left behind is simply taken: the ``flock`` comes first, then the
  record is rewritten, so the record never names a holder that does not hold the lock. A lock file can be
  unlinked or replaced between our ``open`` and our ``flock`` (its holder releasing it): after the ``flock``
  the file is checked to be still the one at the path (same inode), else it is opened again.
* **Released by unlinking while held**, then closing, so no lock files are left behind; the inode check
  above makes this safe. Folders made for the lock file (an output folder not there yet) are removed on
  release when still empty, so a run refused or failed before writing leaves nothing. A shared lock (:attr:`shared`, the row bands of one probability map written by
  several processes) unlinks only when it can become exclusive, i.e. when it was the last holder; its record
  names the latest shared taker.
* **Per process.** ``flock`` locks belong to an open file: a second :class:`FolderLock` on the same file in
  the same process conflicts like another process would, unless both are ``reentrant`` (nested steps of one
  operation, such as a project made and then given its slides), which then share one ``flock``.
* **POSIX only.** Without ``fcntl`` (Windows) nothing is locked. On NFS ``flock`` is emulated with POSIX
  byte-range locks (Linux >= 2.6.12) and works only where the server's lock manager does; a client that
  loses contact with the server can lose its lock. The ``host`` in the record says where the holder runs;
  a holder's liveness is judged by the ``flock`` alone, never by its pid (pids are per host, and reused, and
  a new holder has the ``flock`` a moment before its record replaces a dead one's); a message says when the
  recorded process has ended. A forked child (a data-loader worker) closes its copies of the lock fds, so it
  cannot keep its parent's lock alive after the parent dies.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from .errors import HubmapInputError

try:  # POSIX advisory locks; elsewhere nothing is locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".lock"
RECORD_BYTES = 1024
"""The holder record is written once, padded to this size, so a reader never sees it half-rewritten."""
POLL_S = 0.05

_HELD: dict[str, "_Held"] = {}
_HELD_GUARD = threading.Lock()
_OPEN_FDS: set[int] = set()
"""Every lock fd this process holds, closed in a forked child (see :func:`_forget_in_child`)."""


def _forget_in_child() -> None:
    """A forked child (a data-loader worker) must not keep its parent's locks alive after the parent dies:
    it closes its copies of the lock fds (closing a copy releases nothing while the parent holds it)."""
    for fd in list(_OPEN_FDS):
        with contextlib.suppress(OSError):
            os.close(fd)
    _OPEN_FDS.clear()
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class _Held:
    """A ``flock`` this process holds on one lock file, shared by its reentrant takers."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path, self.count = fd, path, 1


def lock_file_of(folder, *, beside: bool = False) -> Path:
    """Where the lock of ``folder`` lies (see the module doc)."""
    folder = Path(os.path.abspath(os.fspath(folder)))
    return folder.parent / f".{folder.name}.lock" if beside else folder / LOCK_NAME


def program_name(argv=None) -> str:
    """The running program as a person would name it: the script and its sub-commands
    (``napari-hubmap project review``), ``napari``, ``pytest``."""
    argv = list(sys.argv if argv is None else argv) or ["python"]
    name = Path(argv[0]).name
    if name in ("__main__.py", "-c", "", "-m"):
        name = Path(argv[0]).parent.name if name == "__main__.py" else Path(sys.executable).name
    words = []
    for arg in argv[1:3] if not name.endswith(".py") else ():  # a console script's sub-commands, not a script's arguments
        if not arg.replace("-", "").isalnum() or arg.startswith("-"):
            break
        words.append(arg)
    return " ".join([name, *words])


def holder_record(purpose: str) -> dict:
    """What a taker writes into the lock file."""
    command = " ".join(sys.argv)
    return {"pid": os.getpid(), "host": socket.gethostname(), "program": program_name(), "command": command[:400],
            "purpose": purpose, "since": _now_iso()}


def _now_iso() -> str:
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.isoformat(timespec="seconds").replace("+00:00", "Z")


def read_holder(lock_file) -> dict | None:
    """The record in ``lock_file`` (None when absent, empty or unreadable)."""
    try:
        data = json.loads(Path(lock_file).read_text(encoding="utf-8", errors="replace").strip() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe_holder(record: dict | None) -> str:
    """``<program> (pid N on HOST) since <time> for <purpose>``, or what is known of it."""
    if not record:
        return "another process (it has not written its name yet)"
    where = f"pid {record.get('pid', '?')} on {record.get('host', '?')}"
    text = f"{record.get('program', 'a program')} ({where}) since {record.get('since', '?')} for {record.get('purpose', '?')}"
    if record.get("host") == socket.gethostname() and not _running(record.get("pid")):
        text += " (that process has ended; one it started may still hold the lock)"
    return text


def _running(pid) -> bool:
    """Whether process ``pid`` of this host exists (a pid that is not a whole number: assumed running)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


class FolderLock:
    """The write lock of ``folder`` for ``purpose`` (a few words: ``predicting slide_a``).

    A context manager (``with FolderLock(path, "training"):``), or :meth:`acquire` / :meth:`release`.
    ``beside``: the lock file is ``<parent>/.<name>.lock`` (targets replaced whole, or not there yet).
    ``shared``: several holders at once (workers writing disjoint parts), none while an exclusive one holds.
    ``reentrant``: nested takers in this process share the lock. ``wait``: seconds to keep trying.
    """

    def __init__(self, folder, purpose: str, *, beside: bool = False, shared: bool = False,
                 reentrant: bool = False, wait: float = 0.0):
        self.folder = Path(folder)
        self.purpose = purpose
        self.path = lock_file_of(folder, beside=beside)
        self.shared, self.reentrant, self.wait = shared, reentrant, float(wait)
        self.fd: int | None = None
        self.made: list[Path] = []
        """Folders this lock made for its file (a run that fails before writing anything leaves none)."""
        self._owner = os.getpid()
        self._nested = False

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> "FolderLock":
        """Take the lock, or raise :class:`HubmapInputError` naming its holder."""
        if self.held:
            raise HubmapInputError(self.folder, f"lock for {self.purpose} is already taken by this object")
        if fcntl is None:
            return self
        if self.reentrant and self._join_held():
            return self
        deadline = time.monotonic() + self.wait
        while True:
            fd = self._try_lock()
            if fd is not None:
                break
            if time.monotonic() >= deadline:
                raise HubmapInputError(self.folder, f"in use by {describe_holder(read_holder(self.path))}; close it or wait")
            time.sleep(POLL_S)
        self.fd, self._owner = fd, os.getpid()
        _OPEN_FDS.add(fd)
        _write_record(fd, holder_record(self.purpose))
        if self.reentrant:
            with _HELD_GUARD:
                _HELD[str(self.path)] = _Held(fd, self.path)
        return self

    def _join_held(self) -> bool:
        with _HELD_GUARD:
            held = _HELD.get(str(self.path))
            if held is None:
                return False
            held.count += 1
            self.fd, self._nested, self._owner = held.fd, True, os.getpid()
            return True

    def _try_lock(self) -> int | None:
        """An fd holding the ``flock`` on the file now at :attr:`path`, or None when another holds it."""
        for _ in range(100):  # a holder may unlink the file between our open and our flock: open again
            fd = self._open_lock_file()
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return None
            if _same_file(fd, self.path):
                return fd
            os.close(fd)
        raise HubmapInputError(self.path, "lock file keeps changing under us; is another program removing it?")

    def _open_lock_file(self) -> int:
        """The lock file, opened (made, with the folders above it that are missing: see :attr:`made`)."""
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise HubmapInputError(self.path.parent, "exists and is not a folder")
        for attempt in range(5):  # another taker's release may remove a folder it made, between our mkdir and open
            missing = [p for p in [self.path.parent, *self.path.parent.parents] if not p.exists()][::-1]
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                if attempt < 4:
                    continue
                raise HubmapInputError(self.path, f"cannot make the lock file for {self.purpose} (its folder keeps vanishing)") from None
            except OSError as exc:
                raise HubmapInputError(self.path, f"cannot make the lock file for {self.purpose} ({exc.strerror})") from None
            self.made = self.made or missing
            return fd
        raise AssertionError("unreachable")

    def release(self) -> None:
        """Give the lock back (unlinking the file when no one else holds it); idempotent."""
        fd, self.fd = self.fd, None
        if fd is None or self._owner != os.getpid():  # a forked child: its copy was closed at the fork
            return
        if self.reentrant and not self._leave_held(fd):
            return
        with contextlib.suppress(OSError):
            if not self.shared or _try_exclusive(fd):
                if _same_file(fd, self.path):
                    self.path.unlink()
        _OPEN_FDS.discard(fd)
        with contextlib.suppress(OSError):
            os.close(fd)
        for folder in reversed(self.made):  # only while still empty: nothing was written there
            with contextlib.suppress(OSError):
                folder.rmdir()
        self.made = []

    def _leave_held(self, fd: int) -> bool:
        """Whether this was the last reentrant taker (who then releases the ``flock``)."""
        with _HELD_GUARD:
            held = _HELD.get(str(self.path))
            if held is None or held.fd != fd:
                return not self._nested
            held.count -= 1
            if held.count > 0:
                return False
            del _HELD[str(self.path)]
            return True

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"FolderLock({str(self.folder)!r}, {self.purpose!r}, held={self.held})"


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, now = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)


def _try_exclusive(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _write_record(fd: int, record: dict) -> None:
    """The record, in one write of :data:`RECORD_BYTES` (padded with spaces) at offset 0."""
    data = json.dumps(record).encode("utf-8")
    if len(data) > RECORD_BYTES - 1:
        record = {**record, "command": ""}
        data = json.dumps(record).encode("utf-8")[: RECORD_BYTES - 1]
    with contextlib.suppress(OSError):
        os.pwrite(fd, data.ljust(RECORD_BYTES - 1) + b"\n", 0)
        os.ftruncate(fd, RECORD_BYTES)

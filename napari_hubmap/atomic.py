"""Atomic writes: a temp file (or folder) beside the target, renamed over it when complete.

A crash or an exception half way leaves the old target (or nothing) in place, never a partial file.
A write that fails (disk full, I/O error, read-only or forbidden folder) is one
:class:`~napari_hubmap.errors.HubmapWriteError` naming the target, not its temporary
(:func:`write_failures`), and the temporary is removed so a full disk is left no fuller.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from .errors import HubmapInputError, HubmapWriteError

WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM})
"""The errors of a write that failed for want of space, a broken device or permissions: a rerun can succeed
once that is fixed."""
_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)")
"""How Rust writers (safetensors) carry the OS error in their own exception's message."""


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    The temporary keeps the target's suffix so writers that pick a format from the extension
    (tifffile, PIL) behave the same. On error the temporary is removed and the target untouched.
    """
    target = Path(target)
    with write_failures(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary_beside(target, is_dir)
    try:
        yield tmp
        if is_dir and target.exists():
            if _exchange(tmp, target):  # the new folder is in place; tmp now holds the old one
                shutil.rmtree(tmp, ignore_errors=True)
                return
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException as exc:
        error = write_error(target, exc)  # before the clean-up, while a full disk still reads full
        settle_background_writes()
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        if error is None:
            raise
        raise error from exc


def _temporary_beside(target: Path, is_dir: bool) -> Path:
    """A new file (or folder) ``.<name>.<pid>-<random>.partial<suffix>`` in the target's folder, after
    removing the temporaries of ``target`` that writers killed mid-write left (:func:`_remove_dead_temporaries`)."""
    _remove_dead_temporaries(target)
    prefix = f".{target.name}.{os.getpid()}-"
    suffix = "".join(target.suffixes[-2:]) or ".tmp"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".partial" + suffix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".partial" + suffix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    _default_permissions(tmp, is_dir)
    return tmp


def _remove_dead_temporaries(target: Path) -> None:
    """Remove ``target``'s temporaries whose writer process is gone (SIGKILL or a power cut leaves them; each
    may be as large as the target). Names without a pid (older versions) are kept."""
    import glob

    start = f".{target.name}."
    remove_left_by_dead_writers(target.parent, glob.escape(start) + "*.partial*",
                                lambda name: name[len(start):].split("-")[0])


def remove_left_by_dead_writers(folder: Path, pattern: str, pid_of: Callable[[str], str]) -> None:
    """Remove the files and folders of ``folder`` matching ``pattern`` whose writer, the process numbered
    ``pid_of(name)``, is no longer running. Those of a live process (this one included) and names whose
    ``pid_of`` is not a number are kept."""
    import psutil

    for entry in folder.glob(pattern):
        pid = pid_of(entry.name)
        if not pid.isdigit() or psutil.pid_exists(int(pid)):
            continue
        with contextlib.suppress(OSError):  # another writer removed it first, or it cannot be: left as it was
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


@contextlib.contextmanager
def write_failures(target: str | os.PathLike, *also: str | os.PathLike) -> Iterator[None]:
    """A failed write inside (see :data:`WRITE_ERRNOS`; also a short write with no errno, as tifffile
    reports one) becomes one :class:`~napari_hubmap.errors.HubmapWriteError` naming ``target``.

    An error that names a file other than ``target``, something inside it, its temporaries
    (``.<name>.*`` beside it), its folders or the paths in ``also`` is left as it is: it is about an
    input, not this write. Cleaning up is the caller's job (this only renames the error).
    """
    try:
        yield
    except Exception as exc:
        error = write_error(target, exc, also)
        if error is None:
            raise
        settle_background_writes()
        raise error from exc


def settle_background_writes(timeout_s: float = 60.0) -> None:
    """Wait for the chunk writes zarr still runs in the background, and collect their errors.

    zarr 3 writes an array's chunks concurrently on its own event loop; when one fails (a full disk) the
    call raises at once while its sibling writes go on. Left alone they land after the clean-up removed
    the temporary (a half-written folder reappears, a deleted file stays open and the disk stays full)
    and each of their errors is printed later as an asyncio traceback. Does nothing when zarr is unused.
    """
    import asyncio
    import sys

    zarr_sync = sys.modules.get("zarr.core.sync")
    loop = getattr(zarr_sync, "loop", [None])[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return

    async def _settle() -> None:
        this = asyncio.current_task()
        while pending := [task for task in asyncio.all_tasks() if task is not this]:
            await asyncio.gather(*pending, return_exceptions=True)

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(_settle(), loop).result(timeout_s)


def write_error(target: str | os.PathLike, exc: BaseException, also=()) -> HubmapWriteError | None:
    """``exc`` as a :class:`~napari_hubmap.errors.HubmapWriteError` about ``target``, or None when it is
    not a failed write of it (see :func:`write_failures`)."""
    target = Path(os.path.abspath(target))
    if isinstance(exc, HubmapWriteError) and exc.path is not None and _about(exc.path, target, also):
        return HubmapWriteError(target, exc.problem, exc.errno)  # a nested write into this one's temporary
    if isinstance(exc, (InterruptedError, HubmapInputError)) or not isinstance(exc, Exception):
        return None
    if isinstance(exc, OSError):
        code = exc.errno
        named = [name for name in (exc.filename, exc.filename2) if name is not None]  # a copy names both
        if named and not any(_about(name, target, also) for name in named):
            return None
    else:
        found = _OS_ERROR_IN_TEXT.search(str(exc))
        if found is None:
            return None
        code = int(found.group(1))
    if code is None and isinstance(exc, OSError):  # a short write: say why when the disk is full
        code = errno.ENOSPC if _disk_full(target) else None
        return HubmapWriteError(target, f"cannot write: {os.strerror(code) if code else exc}", code)
    if code not in WRITE_ERRNOS:
        return None
    return HubmapWriteError(target, f"cannot write: {os.strerror(code)}", code)


def _about(filename, target: Path, also) -> bool:
    """Whether ``filename`` is the target, inside it, one of its temporaries, one of its folders or in ``also``."""
    path = Path(os.path.abspath(os.fsdecode(filename)))
    if path in target.parents:
        return True
    extra = {Path(os.path.abspath(p)) for p in also}
    for part in (path, *path.parents):
        if part == target or part in extra:
            return True
        if part.parent == target.parent and part.name.startswith(f".{target.name}."):
            return True
    return False


def _disk_full(target: Path) -> bool:
    """Whether the filesystem that holds ``target`` (its nearest existing folder) has no free block left."""
    folder = next((p for p in (target, *target.parents) if p.exists()), None)
    try:
        stats = os.statvfs(folder)
    except (OSError, TypeError, AttributeError):
        return False
    return stats.f_bavail == 0


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported.

    Replacing a folder otherwise needs delete-then-rename, and a crash between the two would leave
    neither the old folder nor the new one.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _default_permissions(path: Path, is_dir: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700: give the file what open() would (0666/0777 less umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if is_dir else 0o666) & ~umask)


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_path(target) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

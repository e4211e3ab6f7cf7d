"""Atomic writes: a temp file (or folder) beside the target, renamed over it when complete.

A crash or an exception half way leaves the old target (or nothing) in place, never a partial file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    The temporary keeps the target's suffix so writers that pick a format from the extension
    (tifffile, PIL) behave the same. On error the temporary is removed and the target untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}."
    suffix = "".join(target.suffixes[-2:]) or ".tmp"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".partial" + suffix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".partial" + suffix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    _default_permissions(tmp, is_dir)
    try:
        yield tmp
        if is_dir and target.exists():
            if _exchange(tmp, target):  # the new folder is in place; tmp now holds the old one
                shutil.rmtree(tmp, ignore_errors=True)
                return
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


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

"""Errors raised for bad user input: one clear message naming the file and the problem."""

from __future__ import annotations

import os
from contextlib import contextmanager


class HubmapInputError(ValueError):
    """Bad input file or argument.

    ``str(error)`` is ``"<path>: <problem>"`` so the CLI can print it as one line.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


@contextmanager
def closed_on_failure(close, path: str | os.PathLike | None, what: str):
    """Reading a just-opened file's structure: any failure calls ``close`` and is one
    :class:`HubmapInputError`, ``corrupt <what> (<kind>: <detail>)`` unless it already is one."""
    try:
        yield
    except HubmapInputError:
        close()
        raise
    except Exception as exc:  # readers raise arbitrary errors on malformed structures
        close()
        raise HubmapInputError(path, f"corrupt {what} ({type(exc).__name__}: {exc})") from exc


class HubmapWriteError(HubmapInputError, OSError):
    """A write that failed (disk full, I/O error, read-only or forbidden folder): ``"<target>: <problem>"``.

    Also an :class:`OSError` carrying ``errno``, ``strerror`` (None when the writer gave no errno) and
    ``filename`` (the target), so code that catches either keeps working; raised by
    :func:`napari_hubmap.atomic.write_failures`.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str, errno: int | None = None):
        super().__init__(path, problem)
        self.errno = errno
        self.strerror = None if errno is None else os.strerror(errno)
        self.filename = self.path

    def __str__(self) -> str:
        return str(self.args[0])

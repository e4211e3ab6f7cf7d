"""Errors raised for bad user input: one clear message naming the file and the problem."""

from __future__ import annotations

import os


class HubmapInputError(ValueError):
    """Bad input file or argument.

    ``str(error)`` is ``"<path>: <problem>"`` so the CLI can print it as one line.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

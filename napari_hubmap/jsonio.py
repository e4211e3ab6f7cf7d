"""Reading the JSON files a user hands over (annotations, project manifests, model cards): every way such a file
can be bad is one :class:`~napari_hubmap.errors.HubmapInputError` naming the file.

Besides unreadable files, bytes that are not text and text that is not JSON, Python's own parser fails in two
ways that are not :class:`json.JSONDecodeError`: JSON nested about a thousand levels deep raises
:class:`RecursionError`, and an integer literal of more than 4300 digits a plain :class:`ValueError`. Both are
bad input here. JSON that parses but is nested more than :data:`MAX_DEPTH` levels deep is refused too: no file
this package reads comes close, and whatever walks the parsed value later (a writer, a copy, a recursive
reader) would run out of stack on it.

A UTF-8 byte-order mark (Notepad writes one) is skipped; UTF-16 and UTF-32 text is recognised by
:func:`json.detect_encoding`, as :func:`json.loads` does for bytes.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np

from .errors import HubmapInputError

__all__ = ["MAX_DEPTH", "load_json", "nesting_depth", "parse_json"]

MAX_DEPTH = 64
"""The deepest nesting of arrays and objects read; GeoJSON needs 8, the project manifest 5."""

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPENERS, _CLOSERS = b"[{", b"]}"


def load_json(path: str | os.PathLike, what: str) -> Any:
    """The parsed JSON of the file ``path``, ``what`` naming the kind of file in errors ("model card")."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise HubmapInputError(path, f"file not found (expected a {what})") from None
    except IsADirectoryError:
        raise HubmapInputError(path, f"is a folder, not a {what}") from None
    except OSError as exc:
        raise HubmapInputError(path, f"cannot read the {what} ({exc.strerror or exc})") from None
    return parse_json(raw, path, what)


def parse_json(data: bytes | str, path: str | os.PathLike | None, what: str) -> Any:
    """The parsed JSON in ``data`` (bytes or text), or one error naming ``path``."""
    text = _text_of(data, path, what)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HubmapInputError(
            path, f"corrupt JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (the {what} is not valid JSON)"
        ) from None
    except RecursionError:
        raise HubmapInputError(path, f"the {what} is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # an integer literal longer than sys.get_int_max_str_digits()
        reason = str(exc).split(";")[0]  # without the advice to call sys.set_int_max_str_digits()
        raise HubmapInputError(path, f"the {what} is not readable JSON ({reason})") from None
    if sum(map(text.count, "[{")) > MAX_DEPTH and nesting_depth(text) > MAX_DEPTH:  # fewer openers: not too deep
        raise HubmapInputError(path, f"the {what} is nested more than {MAX_DEPTH} levels deep")
    return value


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in valid JSON ``text`` (0 for a bare number or string)."""
    codes = np.frombuffer(_STRING.sub("", text).encode("utf-8"), dtype=np.uint8)
    brackets = codes[np.isin(codes, np.frombuffer(_OPENERS + _CLOSERS, dtype=np.uint8))]
    steps = np.where(np.isin(brackets, np.frombuffer(_OPENERS, dtype=np.uint8)), 1, -1).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def _text_of(data: bytes | str, path, what: str) -> str:
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode(json.detect_encoding(data)).removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise HubmapInputError(
            path, f"not UTF-8 text ({exc.reason} at byte {exc.start}): the {what} is not a JSON file"
        ) from None

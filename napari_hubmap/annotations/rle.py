"""Kaggle run-length encoding (RLE) of binary masks, and the ``id,encoding`` CSV files holding it.

Format (HuBMAP Kaggle ``train.csv``): space separated pairs ``start length``, **1-based**, pixels
numbered **top to bottom, then left to right** (column-major / Fortran order). An empty mask is ``""``.
Decoding with a row-major reshape gives a transposed mask: that is the classic bug this module avoids.
Decoding is strict: runs out of order, overlapping, of zero or negative length, or past the image are one
:class:`HubmapInputError` naming the file, the row and the run (never silently merged or clipped).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ..atomic import write_text_atomic
from ..errors import HubmapInputError

__all__ = ["rle_encode", "rle_decode", "read_rle_csv", "write_rle_csv", "ENCODING_COLUMNS"]

ENCODING_COLUMNS = ("encoding", "predicted", "rle")
"""Accepted names of the encoding column, in order of preference (``predicted``: Kaggle submissions)."""

_CHUNK_PIXELS = 1 << 26  # pixels handled per step of rle_encode (bounds the temporary copies)
_MAX_LOOPED_RUNS = 100_000  # above this, rle_decode fills runs with np.repeat instead of a loop
_TILE = 1024  # tile edge for the cache-friendly transpose
_CSV_FIELD_LIMIT = 2**31 - 1  # whole-slide encodings are far longer than csv's default 128 KiB


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (nonzero = foreground) as Kaggle RLE, column-major and 1-based."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode needs a 2-D mask, got shape {mask.shape}")
    if mask.size == 0:  # 0xW or Hx0: no pixels, no runs
        return ""
    starts, ends = _run_bounds(mask)
    pairs = np.empty(2 * starts.size, dtype=np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = ends - starts
    return " ".join(map(str, pairs.tolist()))


def _run_bounds(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based [start, end) of the foreground runs of ``mask`` in column-major order.

    Works on C-order row blocks (no transposed copy): a value changes between flat indices f-1 and
    f = c*H + r either vertically within a column (r >= 1) or from the bottom of column c-1 to the
    top of column c (r == 0).
    """
    height, width = mask.shape
    flips = [_top_row_flips(mask)]
    rows_per_block = max(1, _CHUNK_PIXELS // max(width, 1))
    for row0 in range(0, height - 1, rows_per_block):
        block = mask[row0 : row0 + rows_per_block + 1] != 0
        rows, cols = np.nonzero(block[1:] != block[:-1])
        flips.append(cols.astype(np.int64) * height + rows + row0 + 1)
    if mask[-1, -1]:
        flips.append(np.array([height * width], dtype=np.int64))
    flat = np.sort(np.concatenate(flips))
    return flat[0::2], flat[1::2]


def _top_row_flips(mask: np.ndarray) -> np.ndarray:
    """Flat indices c*H where the top pixel of column c differs from the pixel before it."""
    top = mask[0] != 0
    before = np.concatenate(([False], mask[-1, :-1] != 0))
    return np.flatnonzero(top != before).astype(np.int64) * mask.shape[0]


def rle_decode(
    encoding: str | None,
    shape: tuple[int, int],
    *,
    source: str | os.PathLike | None = None,
    row: str | None = None,
) -> np.ndarray:
    """Decode Kaggle RLE into a bool mask of ``shape`` (H, W).

    ``encoding`` may be empty, ``None`` or NaN (pandas' empty cell): all False. A zero-size ``shape``
    (0xW, Hx0) decodes only the empty encoding, as :func:`rle_encode` writes it. Bad input raises
    :class:`HubmapInputError` with ``path=source`` and a message naming the row (``row``: its id in the
    CSV) and the problem: runs must start at 1 or later, have a length of 1 or more, stay inside the
    image, and come in increasing order without overlapping (as every Kaggle encoder writes them; a run
    that goes backwards or overlaps another means a corrupt or hand-edited encoding, so it is refused
    rather than guessed at).
    """
    height, width = _check_shape(shape, source)
    if _is_blank(encoding):
        return np.zeros((height, width), dtype=bool)
    where = f"row {row!r}: " if row is not None else ""
    starts, lengths = _parse_pairs(str(encoding), source, where)
    _check_runs(starts, lengths, height, width, source, where)
    return _paint_runs(starts - 1, starts - 1 + lengths, height, width)


def _paint_runs(starts: np.ndarray, ends: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bool (H, W) C-order mask of sorted, disjoint column-major runs [start, end)."""
    column_major = _fill_flat(starts, ends, height * width).reshape(width, height)
    mask = np.empty((height, width), dtype=bool)
    for row0 in range(0, height, _TILE):  # tile by tile: a plain transposed copy thrashes the cache
        for col0 in range(0, width, _TILE):
            tile = column_major[col0 : col0 + _TILE, row0 : row0 + _TILE]
            mask[row0 : row0 + _TILE, col0 : col0 + _TILE] = tile.T
    return mask


def _fill_flat(starts: np.ndarray, ends: np.ndarray, total: int) -> np.ndarray:
    """Flat bool array with [start, end) set: one slice per run, or np.repeat for very many runs."""
    if starts.size <= _MAX_LOOPED_RUNS:
        flat = np.zeros(total, dtype=bool)
        for start, end in zip(starts.tolist(), ends.tolist()):
            flat[start:end] = True
        return flat
    values = np.zeros(2 * starts.size + 1, dtype=bool)
    values[1::2] = True
    counts = np.empty(values.size, dtype=np.int64)
    counts[0:-1:2] = starts - np.concatenate(([0], ends[:-1]))
    counts[1::2] = ends - starts
    counts[-1] = total - ends[-1]
    return np.repeat(values, counts)


def _is_blank(encoding) -> bool:
    if encoding is None:
        return True
    if isinstance(encoding, float) and math.isnan(encoding):
        return True
    text = str(encoding).strip()
    return text == "" or text.lower() == "nan"


def _check_shape(shape, source) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise HubmapInputError(source, f"mask shape must be (height, width), got {shape!r}") from None
    if height < 0 or width < 0:
        raise HubmapInputError(source, f"mask shape must not be negative, got {height}x{width}")
    return height, width


def _parse_pairs(encoding: str, source, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    tokens = encoding.split()
    if len(tokens) % 2:
        raise HubmapInputError(source, f"{where}RLE has an odd number of tokens ({len(tokens)})")
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        index, token = _first_bad_token(tokens)
        raise HubmapInputError(
            source, f"{where}RLE token {index + 1} ({token!r}) is not a whole number"
        ) from None
    return values[0::2], values[1::2]


def _first_bad_token(tokens: list[str]) -> tuple[int, str]:
    for index, token in enumerate(tokens):
        try:
            np.int64(int(token))
        except (ValueError, OverflowError):
            return index, token
    return 0, tokens[0]


def _check_runs(starts, lengths, height, width, source, where: str = "") -> None:
    """Each run inside the image, and the runs in increasing order without overlaps (see rle_decode)."""
    total = height * width
    bad_start = np.flatnonzero(starts < 1)
    if bad_start.size:
        i = int(bad_start[0])
        raise HubmapInputError(
            source, f"{where}RLE run {i + 1} has start {starts[i]} (starts are 1-based, must be >= 1)"
        )
    bad_length = np.flatnonzero(lengths < 1)
    if bad_length.size:
        i = int(bad_length[0])
        raise HubmapInputError(source, f"{where}RLE run {i + 1} has length {lengths[i]} (must be >= 1)")
    past_end = np.flatnonzero(lengths > total - starts + 1)  # not starts + lengths: that may overflow int64
    if past_end.size:
        i = int(past_end[0])
        raise HubmapInputError(
            source,
            f"{where}RLE run {i + 1} (start {starts[i]}, length {lengths[i]}) goes past the end of a "
            f"{height}x{width} image ({total} pixels)",
        )
    _check_order(starts, starts + lengths, source, where)


def _check_order(starts: np.ndarray, ends: np.ndarray, source, where: str) -> None:
    """Runs start after the previous one ends (adjacent runs are fine, backwards or overlapping ones not)."""
    backwards = np.flatnonzero(starts[1:] < starts[:-1])
    overlapping = np.flatnonzero(starts[1:] < ends[:-1])
    if backwards.size and (not overlapping.size or backwards[0] <= overlapping[0]):
        i = int(backwards[0]) + 1
        raise HubmapInputError(
            source, f"{where}RLE run {i + 1} starts at {starts[i]}, before run {i} (start {starts[i - 1]}): "
                    "runs must come in increasing order (corrupt encoding?)"
        )
    if overlapping.size:
        i = int(overlapping[0]) + 1
        raise HubmapInputError(
            source, f"{where}RLE run {i + 1} (start {starts[i]}) overlaps run {i} (start {starts[i - 1]}, "
                    f"length {ends[i - 1] - starts[i - 1]}): runs must not overlap (corrupt encoding?)"
        )


def read_rle_csv(path: str | os.PathLike) -> dict[str, str]:
    """Read an RLE CSV (header with ``id`` and ``encoding``/``predicted``/``rle``) into {id: rle}."""
    text = _read_text(path)
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
        if header is None:
            raise HubmapInputError(path, "empty file; expected a CSV with columns id,encoding")
        id_col, enc_col = _find_columns(path, header)
        return _collect_rows(path, reader, id_col, enc_col)
    except csv.Error as exc:
        raise HubmapInputError(path, f"not a valid CSV file ({exc})") from None


def _read_text(path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise HubmapInputError(path, "file not found") from None
    except UnicodeDecodeError:
        raise HubmapInputError(path, "not a text CSV file (not UTF-8 text)") from None
    except OSError as exc:
        raise HubmapInputError(path, f"cannot read file ({exc.strerror or exc})") from None


def _find_columns(path, header: list[str]) -> tuple[int, int]:
    names = [name.strip().lower() for name in header]
    if "id" not in names:
        raise HubmapInputError(path, f"no 'id' column in the CSV header (columns: {_show(header)})")
    for wanted in ENCODING_COLUMNS:
        if wanted in names:
            return names.index("id"), names.index(wanted)
    raise HubmapInputError(
        path,
        f"no encoding column ('encoding', 'predicted' or 'rle') in the CSV header "
        f"(columns: {_show(header)})",
    )


def _show(header: list[str]) -> str:
    return ", ".join(repr(name) for name in header) or "none"


def _collect_rows(path, reader, id_col: int, enc_col: int) -> dict[str, str]:
    encodings: dict[str, str] = {}
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        line = reader.line_num
        if len(row) <= id_col or not row[id_col].strip():
            raise HubmapInputError(path, f"line {line} has no id")
        key = row[id_col].strip()
        if key in encodings:
            raise HubmapInputError(path, f"duplicate id {key!r} (line {line})")
        value = row[enc_col].strip() if len(row) > enc_col else ""
        encodings[key] = "" if _is_blank(value) else value
    return encodings


def write_rle_csv(
    path: str | os.PathLike, encodings: Mapping[str, str], *, column: str = "encoding"
) -> None:
    """Write {id: rle} as a CSV with header ``id,<column>`` (atomically)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", column])
    for key, encoding in encodings.items():
        writer.writerow([key, "" if _is_blank(encoding) else str(encoding)])
    write_text_atomic(path, buffer.getvalue())

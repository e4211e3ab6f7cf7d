"""The review tile grid: square tiles of ``size`` pixels at the working scale, row-major, edge tiles cut.

A tile is named by its grid position ``"row,col"`` (the key in ``review.json`` and on the command line);
its box ``[y0, y1) x [x0, x1)`` is in working-scale pixels (multiply by the downscale for the slide).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import HubmapInputError


@dataclass(frozen=True)
class Tile:
    row: int
    col: int
    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def key(self) -> str:
        return f"{self.row},{self.col}"

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.y0, self.x0, self.y1, self.x1

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def area(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)


def grid_shape(shape, size: int) -> tuple[int, int]:
    return math.ceil(int(shape[0]) / size), math.ceil(int(shape[1]) / size)


def tile(shape, size: int, row: int, col: int) -> Tile:
    rows, cols = grid_shape(shape, size)
    if not (0 <= row < rows and 0 <= col < cols):
        raise HubmapInputError(None, f"tile {row},{col} is outside the {rows}x{cols} grid of {size}-px tiles")
    y0, x0 = row * size, col * size
    return Tile(row, col, y0, x0, min(y0 + size, int(shape[0])), min(x0 + size, int(shape[1])))


def tile_grid(shape, size: int) -> list[Tile]:
    """Every tile of an (H, W) image, row by row."""
    rows, cols = grid_shape(shape, size)
    return [tile(shape, size, r, c) for r in range(rows) for c in range(cols)]


def parse_tile_key(text: str) -> tuple[int, int]:
    """``"row,col"`` -> (row, col)."""
    match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", str(text))
    if not match:
        raise HubmapInputError(None, f"bad tile {text!r}: expected ROW,COL (grid position, e.g. 3,7)")
    return int(match.group(1)), int(match.group(2))


def tile_of_key(shape, size: int, key: str) -> Tile:
    return tile(shape, size, *parse_tile_key(key))

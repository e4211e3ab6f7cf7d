"""Nuclei as dots on a jittered grid: at most one elliptical dot per cell, pure functions of
global coordinates.

Dot centres are quantised to 1/16 px and radii to 1/16, so the squared distances and the
coverage before scaling are exact in float32: whether a dot is stamped in a window around it
or found from a sample's candidate cells, every pixel gets the same value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .noise import hash2, rehash, unit


@dataclass(frozen=True)
class DotStyle:
    """Jittered-grid dots (nuclei): cell size, radius range (pixels), elongation and softness.

    Each cell holds at most one dot anywhere inside it; a dot may spill into the neighbouring
    cells, so its largest semi-axis must stay within half a cell.
    """

    cell: int
    r_min: float
    r_max: float
    min_aspect: float = 0.7  # per-axis scale factor range [min_aspect, 1] of the squared distance
    soft: float = 1.0  # edge ramp, in pixels

    def __post_init__(self):
        if self.reach > self.cell // 2:
            raise ValueError(f"dots of radius {self.r_max} do not fit cells of {self.cell} px")

    @property
    def reach(self) -> float:
        """The largest semi-axis of a dot, pixels."""
        return self.r_max / self.min_aspect**0.5


# keep(centre_rows (nr,), centre_cols (nc,), uniform (nr, nc)) -> bool (nr, nc): which dots exist.
# The centres are the integer pixel coordinates of the cell centres.
KeepFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def dot_layer(ys: np.ndarray, xs: np.ndarray, style: DotStyle, salt: int, keep: KeepFn) -> np.ndarray:
    """Coverage (float32 in [0, 1]) of elliptical dots, at most one per grid cell, on ``ys`` x ``xs``.

    ``ys`` and ``xs`` are evenly spaced (the same step). On dense samplings each dot is stamped
    in a small window around it; on sparse ones each sample looks at the 2 x 2 candidate cells
    around it. Both compute the same exact values (a dot reaches at most half a cell beyond
    its own), so the choice never shows.
    """
    step = int(ys[1] - ys[0]) if len(ys) > 1 else int(xs[1] - xs[0]) if len(xs) > 1 else 1
    if 4 * step <= style.cell:
        return _stamped_dots(ys, xs, step, style, salt, keep)
    return _candidate_dots(ys, xs, style, salt, keep)


def _dot_scale(style: DotStyle) -> np.float32:
    """Factor from (r² - d²) to coverage: a ramp about ``soft`` pixels wide at the rim."""
    return np.float32(1.0 / (2.0 * style.r_max * style.soft))


def _candidate_dots(ys, xs, style: DotStyle, salt: int, keep: KeepFn) -> np.ndarray:
    """Dot coverage where each sample takes the max over its 2 x 2 candidate cells."""
    half = style.cell // 2
    rows, row_pos = _candidate_cells(ys, style.cell, half)
    cols, col_pos = _candidate_cells(xs, style.cell, half)
    dot = _dot_params(rows, cols, style, salt)
    exists = keep(rows * style.cell + half, cols * style.cell + half, dot["u"])
    radius2 = np.where(exists, dot["r2"], np.float32(-1e4)).astype(np.float32)
    yf, xf = ys.astype(np.float32)[:, None], xs.astype(np.float32)[None, :]
    along = []  # (cells, samples): squared x distance to the dot of each candidate cell
    for pos_x in col_pos:
        dx = xf - dot["cx"][:, pos_x]
        along.append(dot["ex"][:, pos_x] * (dx * dx))
    best = None
    for pos_y in row_pos:
        dy = yf - dot["cy"][pos_y]
        across = radius2[pos_y] - dot["ey"][pos_y] * (dy * dy)  # (samples, cells)
        for pos_x, along_x in zip(col_pos, along):
            # pos_x is non-decreasing: repeating columns by run length is a fast gather
            value = np.repeat(across, np.bincount(pos_x, minlength=across.shape[1]), axis=1)
            value -= along_x[pos_y]
            best = value if best is None else np.maximum(best, value, out=best)
    best *= _dot_scale(style)
    return np.clip(best, 0.0, 1.0, out=best)


def _stamped_dots(ys, xs, step: int, style: DotStyle, salt: int, keep: KeepFn) -> np.ndarray:
    """Dot coverage on a grid with spacing ``step``, computed only in a window around each dot.

    Windows are merged with a max-scatter (order-free, so any tiling gives the same pixels)
    into a padded canvas, so windows sticking out of the grid need no clipping.
    """
    half = style.cell // 2
    rows = np.arange((int(ys[0]) - half) // style.cell, (int(ys[-1]) + half) // style.cell + 1)
    cols = np.arange((int(xs[0]) - half) // style.cell, (int(xs[-1]) + half) // style.cell + 1)
    dot = _dot_params(rows, cols, style, salt)
    iy, ix = np.nonzero(keep(rows * style.cell + half, cols * style.cell + half, dot["u"]))
    dot = {name: values[iy, ix] for name, values in dot.items()}
    size = int(2 * style.reach) // step + 2
    top = _window_start(dot["cy"], style.reach, int(ys[0]), step, size)
    left = _window_start(dot["cx"], style.reach, int(xs[0]), step, size)
    dy = (ys[0] + step * top).astype(np.float32) - dot["cy"][:, None]
    dx = (xs[0] + step * left).astype(np.float32) - dot["cx"][:, None]
    across = dot["r2"][:, None] - dot["ey"][:, None] * (dy * dy)  # same operations as
    along = dot["ex"][:, None] * (dx * dx)  # _candidate_dots, for identical values
    value = across[:, :, None] - along[:, None, :]
    value *= _dot_scale(style)
    np.clip(value, 0.0, 1.0, out=value)
    pad = (style.cell + half) // step + size + 1  # windows reach at most this far out
    return _max_scatter(value, top + pad, left + pad, len(ys) + 2 * pad, len(xs) + 2 * pad)[
        pad:-pad, pad:-pad
    ]


def _window_start(centre: np.ndarray, reach: float, first: int, step: int, size: int) -> np.ndarray:
    """(dots, size) sample indices of each dot's window along one axis (grid first + step * i)."""
    lowest = np.floor(centre - reach).astype(np.int64)
    start = -((first - lowest) // step)  # first sample at or after the lowest reachable pixel
    return start[:, None] + np.arange(size)


def _max_scatter(value: np.ndarray, rows: np.ndarray, cols: np.ndarray, height: int, width: int) -> np.ndarray:
    """Canvas (height, width) holding, per pixel, the max of the (dots, rows, cols) windows."""
    index = (rows * width)[:, :, None] + cols[:, None, :]
    out = np.zeros((height, width), dtype=np.float32)
    np.maximum.at(out.reshape(-1), index.reshape(-1), value.reshape(-1))
    return out


def _candidate_cells(coords: np.ndarray, cell: int, half: int):
    """Cells used by ``coords`` and, for the lower and upper candidate, each coordinate's position."""
    lower = (coords - half) // cell
    lo = int(lower[0])
    span = int(lower[-1]) + 2 - lo
    if span <= 2 * len(coords) + 2:
        cells = np.arange(lo, lo + span)
        return cells, (lower - lo, lower - lo + 1)
    cells = np.unique(np.concatenate([lower, lower + 1]))
    pos = np.searchsorted(cells, lower)
    return cells, (pos, pos + 1)


def _quantise(values: np.ndarray, steps: int = 16) -> np.ndarray:
    """Round down to multiples of 1/steps (exact in float32 for pixel-sized values)."""
    return np.floor(values * steps) / steps


def _dot_params(rows: np.ndarray, cols: np.ndarray, style: DotStyle, salt: int) -> dict:
    """Per-cell dot centre (global pixels), squared radius, axis factors and a uniform (float32)."""
    h = hash2(rows[:, None], cols[None, :], salt)
    radius = _quantise(style.r_min + (style.r_max - style.r_min) * unit(rehash(h, 2)))
    squeeze = 1.0 - style.min_aspect
    params = {
        "cy": rows[:, None] * style.cell + _quantise(unit(h) * style.cell),
        "cx": cols[None, :] * style.cell + _quantise(unit(rehash(h, 1)) * style.cell),
        "r2": radius * radius,
        "ey": 1.0 - _quantise(squeeze * unit(rehash(h, 4))),
        "ex": 1.0 - _quantise(squeeze * unit(rehash(h, 5))),
    }
    params = {k: v.astype(np.float32) for k, v in params.items()}
    params["u"] = unit(rehash(h, 3))
    return params

"""Deterministic noise of global pixel coordinates: integer hashing, exact lattice noise, grain, dots.

Every function here is a pure function of global integer pixel coordinates and a salt, so a
region rendered alone has exactly the pixels it has inside any larger region.

Lattice noise is a cubic B-spline through hashed integer lattice values. The spline weights are
quantised to multiples of 1/4096 and the lattice values are small integers, so in float64 every
product and partial sum is an exact integer: the result does not depend on the summation order
BLAS picks for a given tile shape, and a point evaluation equals the tiled evaluation bit for bit.
Per-pixel arithmetic elsewhere sticks to +, -, *, / and sqrt (correctly rounded in every code
path); no transcendental functions run per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

_MASK32 = 0xFFFFFFFF
_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)
_PX = np.uint32(0x9E3779B1)
_WEIGHT_ONE = 4096  # spline weights are integers summing to this
_LATTICE_HALF = 512  # lattice values are integers in [-512, 511]
_NOISE_SCALE = 1.0 / (_WEIGHT_ONE * _WEIGHT_ONE * _LATTICE_HALF)  # a power of two: exact
_DENSE_COLUMNS = 160  # above this many lattice columns the second pass gathers instead of BLAS


def mix_int(*parts: int) -> int:
    """Hash Python integers (seed, layer ids) into one 32-bit salt."""
    h = 0x2545F491
    for part in parts:
        h = _lowbias_int(h ^ (int(part) & _MASK32))
        h = _lowbias_int(h + ((int(part) >> 32) & _MASK32))
    return h


def _lowbias_int(h: int) -> int:
    """The lowbias32 integer mixer on a Python int."""
    h &= _MASK32
    h ^= h >> 16
    h = (h * 0x7FEB352D) & _MASK32
    h ^= h >> 15
    h = (h * 0x846CA68B) & _MASK32
    return h ^ (h >> 16)


def _lowbias(h: np.ndarray) -> np.ndarray:
    """The lowbias32 mixer on a uint32 array (wrapping arithmetic)."""
    h = h ^ (h >> np.uint32(16))
    h *= _M1
    h ^= h >> np.uint32(15)
    h *= _M2
    h ^= h >> np.uint32(16)
    return h


def hash2(iy, ix, salt: int) -> np.ndarray:
    """uint32 hash of integer coordinate arrays ``iy``, ``ix`` (broadcast together) and a salt."""
    a = _lowbias(np.asarray(iy).astype(np.uint32) ^ np.uint32(salt & _MASK32))
    return _lowbias(a + np.asarray(ix).astype(np.uint32) * _PX)


def rehash(h: np.ndarray, k: int) -> np.ndarray:
    """A further independent uint32 hash derived from ``h`` (stream ``k``)."""
    return _lowbias(h ^ np.uint32(mix_int(k, 0x51ED27)))


def unit(h: np.ndarray) -> np.ndarray:
    """Map uint32 hashes to float64 uniform in [0, 1) with 24 bits (exactly representable)."""
    return (h >> np.uint32(8)).astype(np.float64) * (1.0 / (1 << 24))


@dataclass(frozen=True)
class Octave:
    """One lattice-noise octave: lattice spacing in pixels, integer amplitude and salt."""

    spacing: int
    amplitude: int
    salt: int


def octave_bound(octaves: tuple[Octave, ...]) -> float:
    """An upper bound of |noise| for :func:`lattice_field` with these octaves."""
    return float(sum(o.amplitude for o in octaves))


@lru_cache(maxsize=64)
def _spline_table(spacing: int) -> np.ndarray:
    """(spacing, 4) integer cubic B-spline weights (sum 4096) for offsets 0..spacing-1."""
    t = np.arange(spacing, dtype=np.float64) / spacing
    b0 = np.round(_WEIGHT_ONE * (1 - t) ** 3 / 6)
    b2 = np.round(_WEIGHT_ONE * (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6)
    b3 = np.round(_WEIGHT_ONE * t**3 / 6)
    b1 = _WEIGHT_ONE - b0 - b2 - b3
    table = np.stack([b0, b1, b2, b3], axis=1)
    table.setflags(write=False)
    return table


def _axis_weights(coords: np.ndarray, spacing: int):
    """Lattice indices (n, 4) and integer weights (n, 4) for integer pixel ``coords``."""
    cell = coords // spacing
    weights = _spline_table(spacing)[coords - cell * spacing]
    return cell[..., None] + np.arange(-1, 3), weights


def _lattice_values(iy, ix, octave: Octave) -> np.ndarray:
    """Integer lattice values times the amplitude, as float64."""
    h = hash2(iy, ix, octave.salt)
    values = (h >> np.uint32(22)).astype(np.int64) - _LATTICE_HALF
    return (values * octave.amplitude).astype(np.float64)


def _axis_factor(coords: np.ndarray, spacing: int):
    """Unique lattice indices used by ``coords``, positions into them (n, 4) and weights (n, 4)."""
    index, weights = _axis_weights(coords, spacing)
    lo = int(index[0, 0])
    span = int(index[-1, -1]) - lo + 1
    if span <= 4 * len(coords):
        return np.arange(lo, lo + span), index - lo, weights
    unique, inverse = np.unique(index, return_inverse=True)
    return unique, inverse.reshape(index.shape), weights


def lattice_field(ys: np.ndarray, xs: np.ndarray, octaves: tuple[Octave, ...]) -> np.ndarray:
    """Sum of lattice-noise octaves on the grid ``ys`` x ``xs`` (sorted int64 pixel coordinates).

    Returns float32 (len(ys), len(xs)), each octave within ±amplitude.
    """
    firsts, seconds = [], []
    for octave in octaves:
        rows, row_pos, row_w = _axis_factor(ys, octave.spacing)
        cols, col_pos, col_w = _axis_factor(xs, octave.spacing)
        lattice = _lattice_values(rows[:, None], cols[None, :], octave)
        first = np.zeros((len(ys), len(cols)))
        for a in range(4):
            first += row_w[:, a, None] * lattice[row_pos[:, a]]
        firsts.append(first)
        seconds.append((col_pos, col_w, len(cols)))
    total_cols = sum(n for _, _, n in seconds)
    if total_cols <= _DENSE_COLUMNS:
        field = np.hstack(firsts) @ _dense_columns(seconds, len(xs))
    else:
        field = _gather_columns(firsts, seconds, len(xs))
    return (field * _NOISE_SCALE).astype(np.float32)


def _dense_columns(seconds, width: int) -> np.ndarray:
    """Stack the column weight matrices (lattice column -> pixel column) of all octaves."""
    blocks = []
    pixel = np.arange(width)
    for col_pos, col_w, n in seconds:
        block = np.zeros((n, width))
        for b in range(4):
            block[col_pos[:, b], pixel] = col_w[:, b]
        blocks.append(block)
    return np.vstack(blocks)


def _gather_columns(firsts, seconds, width: int) -> np.ndarray:
    """Second pass by gathering 4 lattice columns per pixel column (for sparse samplings)."""
    field = np.zeros((firsts[0].shape[0], width))
    for first, (col_pos, col_w, _) in zip(firsts, seconds):
        for b in range(4):
            field += first[:, col_pos[:, b]] * col_w[None, :, b]
    return field


def lattice_points(y: np.ndarray, x: np.ndarray, octaves: tuple[Octave, ...]) -> np.ndarray:
    """The same noise as :func:`lattice_field` at scattered integer points (float32, y's shape)."""
    y = np.asarray(y, dtype=np.int64)
    x = np.asarray(x, dtype=np.int64)
    total = np.zeros(y.shape)
    for octave in octaves:
        row_idx, row_w = _axis_weights(y, octave.spacing)
        col_idx, col_w = _axis_weights(x, octave.spacing)
        for a in range(4):
            for b in range(4):
                value = _lattice_values(row_idx[..., a], col_idx[..., b], octave)
                total += row_w[..., a] * col_w[..., b] * value
    return (total * _NOISE_SCALE).astype(np.float32)


_GRAIN_PERIODS = (251, 263)


@lru_cache(maxsize=16)
def _grain_tables(salt: int) -> tuple[np.ndarray, np.ndarray]:
    """Two periodic tables of fine granular noise (coprime periods, so no visible repeat)."""
    from scipy.ndimage import gaussian_filter

    tables = []
    for k, period in enumerate(_GRAIN_PERIODS):
        idx = np.arange(period)
        white = unit(hash2(idx[:, None], idx[None, :], mix_int(salt, k))) - 0.5
        smooth = gaussian_filter(white, 0.9, mode="wrap")
        smooth /= smooth.std() * 2 * len(_GRAIN_PERIODS) ** 0.5
        smooth.setflags(write=False)
        tables.append(smooth.astype(np.float32))
    return tables[0], tables[1]


def grain(ys: np.ndarray, xs: np.ndarray, salt: int) -> np.ndarray:
    """Fine granular noise (float32, std about 0.5) on the grid ``ys`` x ``xs``."""
    out = None
    for table, period in zip(_grain_tables(salt), _GRAIN_PERIODS):
        part = table[ys % period][:, xs % period]
        out = part if out is None else out + part
    return out


@dataclass(frozen=True)
class DotStyle:
    """Jittered-grid dots (nuclei): cell size, radius range (pixels) and edge softness."""

    cell: int
    r_min: float
    r_max: float
    soft: float = 1.0


KeepFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def dot_layer(ys: np.ndarray, xs: np.ndarray, style: DotStyle, salt: int, keep: KeepFn) -> np.ndarray:
    """Coverage (float32 in [0, 1]) of round dots, at most one per grid cell, on ``ys`` x ``xs``.

    ``keep(cy, cx, u)`` gets the dot centres (global float64 pixel coordinates, arrays over the
    cells) and a uniform hash per cell, and says which dots exist.
    """
    cell_y, pos_y = _cells(ys, style.cell)
    cell_x, pos_x = _cells(xs, style.cell)
    centre_y, centre_x, radius2, u = _dot_params(cell_y, cell_x, style, salt)
    exists = keep(centre_y, centre_x, u)
    radius2 = np.where(exists, radius2, -1e4).astype(np.float32)
    flat = pos_y[:, None] * len(cell_x) + pos_x[None, :]
    dx = xs.astype(np.float32)[None, :] - centre_x.astype(np.float32).ravel()[flat]
    dy = ys.astype(np.float32)[:, None] - centre_y.astype(np.float32).ravel()[flat]
    dx *= dx
    dy *= dy
    inside = radius2.ravel()[flat]
    inside -= dx
    inside -= dy
    inside *= np.float32(1.0 / (2.0 * style.r_max * style.soft))
    return np.clip(inside, 0.0, 1.0, out=inside)


def _cells(coords: np.ndarray, cell: int):
    """Unique grid cells touched by ``coords`` and each coordinate's position among them."""
    index = coords // cell
    unique, pos = np.unique(index, return_inverse=True)
    return unique, pos.ravel()


def _dot_params(cell_y, cell_x, style: DotStyle, salt: int):
    """Per-cell dot centre (global pixels, quantised to 1/16), squared radius and a uniform."""
    h = hash2(cell_y[:, None], cell_x[None, :], salt)
    free = style.cell - 2 * style.r_max
    off_y = np.floor(unit(h) * free * 16) / 16 + style.r_max
    off_x = np.floor(unit(rehash(h, 1)) * free * 16) / 16 + style.r_max
    radius = style.r_min + (style.r_max - style.r_min) * unit(rehash(h, 2))
    radius = np.floor(radius * 16) / 16
    centre_y = cell_y[:, None] * float(style.cell) + off_y
    centre_x = cell_x[None, :] * float(style.cell) + off_x
    return centre_y, centre_x, radius * radius, unit(rehash(h, 3))

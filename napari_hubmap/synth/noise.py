"""Deterministic noise of global pixel coordinates: integer hashing, exact lattice noise, grain.

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

import numpy as np

_MASK32 = 0xFFFFFFFF
_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)
_PX = np.uint32(0x9E3779B1)
_WEIGHT_ONE = 4096  # spline weights are integers summing to this
_LATTICE_HALF = 512  # lattice values are integers in [-512, 511]
_DENSE_COLUMNS = 300  # above this many lattice columns the second pass gathers instead of BLAS
_SINGLE_THREAD_MNK = 262144  # OpenBLAS runs gemm single-threaded at or below m * n * k of this


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


@lru_cache(maxsize=256)
def _stream_salt(k: int) -> np.uint32:
    """The salt of hash stream ``k``."""
    return np.uint32(mix_int(k, 0x51ED27))


def rehash(h: np.ndarray, k: int) -> np.ndarray:
    """A further independent uint32 hash derived from ``h`` (stream ``k``)."""
    return _lowbias(h ^ _stream_salt(k))


def unit(h: np.ndarray) -> np.ndarray:
    """Map uint32 hashes to float64 uniform in [0, 1) with 24 bits (exactly representable)."""
    return (h >> np.uint32(8)).astype(np.float64) * (1.0 / (1 << 24))


@dataclass(frozen=True)
class Octave:
    """One lattice-noise octave: lattice spacing in pixels, integer amplitude and salt."""

    spacing: int
    amplitude: int
    salt: int


@lru_cache(maxsize=64)
def _field_scale(octaves: tuple[Octave, ...]) -> float:
    """The power of two that maps summed integer octaves to [-1, 1]."""
    total = sum(o.amplitude for o in octaves)
    if total & (total - 1):
        raise ValueError(f"octave amplitudes must sum to a power of two, got {total}")
    return 1.0 / (_WEIGHT_ONE * _WEIGHT_ONE * _LATTICE_HALF * total)


@lru_cache(maxsize=64)
def spline_table(spacing: int) -> np.ndarray:
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
    weights = spline_table(spacing)[coords - cell * spacing]
    return cell[..., None] + np.arange(-1, 3), weights


def _lattice_values(iy, ix, octave: Octave) -> np.ndarray:
    """Integer lattice values times the amplitude, as float64."""
    h = hash2(iy, ix, octave.salt)
    values = (h >> np.uint32(22)).astype(np.int64) - _LATTICE_HALF
    return (values * octave.amplitude).astype(np.float64)


@dataclass(frozen=True, eq=False)
class _Axis:
    """How one axis of samples reads a lattice: lattice indices used, positions and weights."""

    lattice: np.ndarray  # (k,) lattice indices
    pos: np.ndarray  # (n, 4) positions into ``lattice``
    weights: np.ndarray  # (n, 4) integer weights


@lru_cache(maxsize=512)
def _axis(start: int, step: int, n: int, spacing: int) -> _Axis:
    """Lattice factor of the samples start + step * arange(n) (cached: blocks share axes)."""
    coords = start + step * np.arange(n, dtype=np.int64)
    index, weights = _axis_weights(coords, spacing)
    lo = int(index[0, 0])
    span = int(index[-1, -1]) - lo + 1
    if span <= 4 * n:
        return _Axis(np.arange(lo, lo + span), index - lo, weights)
    unique, inverse = np.unique(index, return_inverse=True)
    return _Axis(unique, inverse.reshape(index.shape), weights)


def _dense_axis(start: int, step: int, n: int, spacing: int) -> np.ndarray:
    """(k, n) matrix of integer weights mapping lattice columns to sample columns."""
    ax = _axis(start, step, n, spacing)
    dense = np.zeros((len(ax.lattice), n))
    samples = np.arange(n)
    for b in range(4):
        dense[ax.pos[:, b], samples] = ax.weights[:, b]
    dense.setflags(write=False)
    return dense


@lru_cache(maxsize=256)
def _dense_stack(start: int, step: int, n: int, spacings: tuple[int, ...]) -> np.ndarray:
    """The dense column matrices of several octaves stacked (rows follow ``spacings``)."""
    stack = np.vstack([_dense_axis(start, step, n, spacing) for spacing in spacings])
    stack.setflags(write=False)
    return stack


def _progression(coords: np.ndarray) -> tuple[int, int, int] | None:
    """(start, step, n) if ``coords`` is an increasing arithmetic progression, else None."""
    n = len(coords)
    start = int(coords[0])
    step = int(coords[1] - coords[0]) if n > 1 else 1
    if step < 1 or (n > 2 and not np.all(np.diff(coords) == step)):
        return None
    return start, step, n


def lattice_grid(ys: np.ndarray, xs: np.ndarray, octaves: tuple[Octave, ...]) -> np.ndarray:
    """:func:`lattice_field` on any sorted coordinates (point evaluation when not evenly spaced)."""
    if _progression(ys) and _progression(xs):
        return lattice_field(ys, xs, octaves)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    return lattice_points(grid_y, grid_x, octaves)


def lattice_field(ys: np.ndarray, xs: np.ndarray, octaves: tuple[Octave, ...]) -> np.ndarray:
    """Sum of lattice-noise octaves, normalised to [-1, 1], on the grid ``ys`` x ``xs``.

    ``ys`` and ``xs`` are increasing arithmetic progressions of integer pixel coordinates.
    Returns float32 (len(ys), len(xs)).
    """
    py, px = _progression(ys), _progression(xs)
    if py is None or px is None:
        raise ValueError("sample coordinates must be increasing arithmetic progressions")
    firsts, columns = [], []
    scale = _field_scale(octaves)  # a power of two: scaling the lattice keeps every sum exact
    for octave in octaves:
        rows = _axis(*py, octave.spacing)
        cols = _axis(*px, octave.spacing)
        lattice = _lattice_values(rows.lattice[:, None], cols.lattice[None, :], octave)
        lattice *= scale
        first = rows.weights[:, 0, None] * lattice[rows.pos[:, 0]]
        for a in range(1, 4):
            first += rows.weights[:, a, None] * lattice[rows.pos[:, a]]
        firsts.append(first)
        columns.append((cols, octave.spacing))
    total_cols = sum(len(c.lattice) for c, _ in columns)
    if total_cols <= _DENSE_COLUMNS:
        field = _small_matmul(np.hstack(firsts), _dense_stack(*px, tuple(spacing for _, spacing in columns)))
    else:
        field = _gather_columns(firsts, [c for c, _ in columns], len(xs))
    return field.astype(np.float32)


def _small_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in row chunks small enough that OpenBLAS stays single-threaded.

    Threaded small products are slow, and very slow when the other cores are busy; exactness
    does not depend on the chunking (all partial sums are exact integers).
    """
    rows = max(1, _SINGLE_THREAD_MNK // (a.shape[1] * b.shape[1]))
    if rows >= a.shape[0]:
        return a @ b
    out = np.empty((a.shape[0], b.shape[1]))
    for r in range(0, a.shape[0], rows):
        np.matmul(a[r : r + rows], b, out=out[r : r + rows])
    return out


def _gather_columns(firsts, columns, width: int) -> np.ndarray:
    """Second pass by gathering 4 lattice columns per sample column (for sparse samplings)."""
    field = np.zeros((firsts[0].shape[0], width))
    for first, cols in zip(firsts, columns):
        for b in range(4):
            field += first[:, cols.pos[:, b]] * cols.weights[None, :, b]
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
    total *= _field_scale(octaves)
    return total.astype(np.float32)


_GRAIN_PERIOD = 521  # prime; the grain repeats every 260 µm at 0.5 µm/px, under everything else


@lru_cache(maxsize=16)
def _grain_table(salt: int) -> np.ndarray:
    """A periodic table of fine granular noise, std 0.5."""
    from scipy.ndimage import gaussian_filter

    idx = np.arange(_GRAIN_PERIOD)
    white = unit(hash2(idx[:, None], idx[None, :], salt)) - 0.5
    smooth = gaussian_filter(white, 0.9, mode="wrap")
    smooth *= 0.5 / smooth.std()
    np.clip(smooth, -2.0, 2.0, out=smooth)
    table = smooth.astype(np.float32)
    table.setflags(write=False)
    return table


def grain(ys: np.ndarray, xs: np.ndarray, salt: int) -> np.ndarray:
    """Fine granular noise (float32, std about 0.5, |value| <= 2) on the grid ``ys`` x ``xs``."""
    table = _grain_table(salt)
    return np.take(table[ys % _GRAIN_PERIOD], xs % _GRAIN_PERIOD, axis=1)  # C order, unlike [:, idx]

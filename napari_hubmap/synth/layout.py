"""Where things are on a synthetic slide: the tissue field and the glomeruli, without rendering.

The tissue field is lattice noise of global coordinates minus a border falloff; its threshold is
calibrated once per spec so that about ``tissue_fraction`` of the slide is tissue. Glomeruli are
candidates on a jittered grid (one hashed candidate per cell), kept with a probability that gives
the requested density, rejected when they leave the image or the tissue, or when they overlap a
neighbouring candidate of higher priority. All of it is vectorised and cached per spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .noise import hash2, lattice_field, lattice_points, octave_bound, rehash, unit
from .spec import SynthSpec, glomerulus_radius_px, pixels_per_mm2, scales

WOBBLE_ORDERS = (2, 3, 4, 5)  # harmonics of the glomerulus outline
TUFT_ORDERS = (1, 2, 3, 4, 5, 6, 7)  # harmonics of the tuft edge (1 = off-centre tuft)
_WOBBLE_AMPLITUDE = 0.045
_TUFT_AMPLITUDE = 0.05
_SIZE_JITTER = 0.30  # ± relative change of the diameter
_MAX_ELONGATION = 0.22  # ry / rx down to 1 - this
POLYGON_VERTICES = 128
EDGE_NOISE = 0.05  # how far (in tissue-field units) tubule noise moves the tissue edge


@dataclass(eq=False)
class Glomerulus:
    """One glomerulus: centre, semi-axes and rotation (radians), and its outline polygon.

    ``polygon`` is (N, 2) [x, y] in full-resolution pixel coordinates (pixel (r, c) covers
    x in [c, c+1), y in [r, r+1)) and includes Bowman's capsule. ``shape`` holds the outline
    and tuft harmonics the renderer uses; the polygon samples exactly that outline.
    """

    cx: float
    cy: float
    rx: float
    ry: float
    angle: float
    polygon: np.ndarray
    shape: "GlomerulusShape" = field(default=None, repr=False)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) integer pixel bounds containing the outline."""
        xs, ys = self.polygon[:, 0], self.polygon[:, 1]
        return (
            int(math.floor(ys.min())) - 1,
            int(math.ceil(ys.max())) + 1,
            int(math.floor(xs.min())) - 1,
            int(math.ceil(xs.max())) + 1,
        )


@dataclass(frozen=True, eq=False)
class GlomerulusShape:
    """Harmonic coefficients of the outline and tuft edge, and the per-glomerulus salt."""

    wobble: np.ndarray  # (len(WOBBLE_ORDERS), 2) cos / sin coefficients
    tuft: np.ndarray  # (len(TUFT_ORDERS), 2)
    tuft_edge: float  # mean normalised radius of the tuft edge
    capsule: float  # normalised capsule width
    salt: int


def harmonics(cos_t: np.ndarray, sin_t: np.ndarray, orders, coeffs: np.ndarray) -> np.ndarray:
    """sum_k a_k cos(k t) + b_k sin(k t) from cos t, sin t (Chebyshev recurrences, no trig)."""
    total = np.zeros(np.broadcast(cos_t, sin_t).shape)
    c_k, s_k = np.ones_like(total), np.zeros_like(total)
    wanted = dict(zip(orders, coeffs))
    for k in range(1, max(orders) + 1):
        c_k, s_k = c_k * cos_t - s_k * sin_t, s_k * cos_t + c_k * sin_t
        if k in wanted:
            a, b = wanted[k]
            total += a * c_k + b * s_k
    return total


def outline_polygon(cx, cy, rx, ry, angle, wobble: np.ndarray, n: int = POLYGON_VERTICES) -> np.ndarray:
    """Sample the glomerulus outline into an (n, 2) [x, y] polygon."""
    theta = np.arange(n) * (2 * math.pi / n)
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    radius = 1.0 + harmonics(cos_t, sin_t, WOBBLE_ORDERS, wobble)
    u, v = rx * radius * cos_t, ry * radius * sin_t
    ca, sa = math.cos(angle), math.sin(angle)
    return np.stack([cx + u * ca - v * sa, cy + u * sa + v * ca], axis=1)


# --- tissue -----------------------------------------------------------------------------------


def _border_falloff(coords: np.ndarray, size: int) -> np.ndarray:
    """Negative penalty near the slide border along one axis (float32), 0 in the interior."""
    margin = max(8.0, min(0.05 * size, 1500.0))
    dist = np.minimum(coords + 0.5, size - coords - 0.5)
    ramp = np.clip(1.0 - dist / margin, 0.0, 1.0)
    return (-0.6 * ramp * ramp).astype(np.float32)


def tissue_raw(spec: SynthSpec, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Tissue field (before thresholding) on the grid ys x xs, float32 roughly in [-1, 1]."""
    sc = scales(spec)
    field_ = lattice_field(ys, xs, sc.tissue_octaves)
    field_ *= np.float32(1.0 / octave_bound(sc.tissue_octaves))
    field_ += _border_falloff(ys, spec.height)[:, None]
    field_ += _border_falloff(xs, spec.width)[None, :]
    return field_


def tissue_points(spec: SynthSpec, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The tissue field of :func:`tissue_raw` at scattered integer points."""
    sc = scales(spec)
    y = np.asarray(y, dtype=np.int64)
    x = np.asarray(x, dtype=np.int64)
    value = lattice_points(y, x, sc.tissue_octaves)
    value *= np.float32(1.0 / octave_bound(sc.tissue_octaves))
    value += _border_falloff(y, spec.height)
    value += _border_falloff(x, spec.width)
    return value


_THRESHOLDS: dict = {}


def tissue_threshold(spec: SynthSpec) -> float:
    """Field value above which there is tissue, calibrated on a grid to ``tissue_fraction``."""
    found = _THRESHOLDS.get(spec)
    if found is None:
        ny = min(spec.height, 160)
        nx = min(spec.width, 160)
        ys = (np.arange(ny) * spec.height) // ny + spec.height // (2 * ny)
        xs = (np.arange(nx) * spec.width) // nx + spec.width // (2 * nx)
        values = tissue_raw(spec, ys, xs).ravel()
        found = float(np.quantile(values, 1.0 - spec.tissue_fraction)) if spec.tissue_fraction < 1 else -9.0
        _THRESHOLDS[spec] = found
    return found


# --- glomeruli --------------------------------------------------------------------------------


def _max_outer_radius(r_mean: float) -> float:
    """Upper bound of the outline radius over all glomeruli of a slide."""
    r_max = r_mean * (1 + _SIZE_JITTER) / math.sqrt(1 - _MAX_ELONGATION)
    return r_max * (1 + _WOBBLE_AMPLITUDE * sum(2 / math.sqrt(k) for k in WOBBLE_ORDERS))


@dataclass
class _Candidates:
    """Candidate glomeruli on the (ny, nx) cell grid, flattened."""

    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray
    elongation: np.ndarray
    angle: np.ndarray
    outer: np.ndarray
    priority: np.ndarray
    hashes: np.ndarray
    keep: np.ndarray


def _cell_size_and_rate(spec: SynthSpec) -> tuple[float, float]:
    """Grid cell (pixels) and the probability a cell holds a candidate."""
    r_mean = glomerulus_radius_px(spec)
    cell = 2.2 * _max_outer_radius(r_mean)
    density = spec.glomeruli_per_mm2 / pixels_per_mm2(spec) / 0.8  # ~20% lost at the tissue edge
    if density <= 0:
        return cell, 0.0
    rate = density * cell * cell
    if rate > 1.0:
        cell, rate = 1.0 / math.sqrt(density), 1.0
    return cell, rate


def _candidates(spec: SynthSpec) -> tuple[_Candidates, tuple[int, int]]:
    """One hashed candidate per cell: position, size, elongation, angle, priority, rate test."""
    cell, rate = _cell_size_and_rate(spec)
    ny, nx = math.ceil(spec.height / cell), math.ceil(spec.width / cell)
    gy, gx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    h = hash2(gy.ravel(), gx.ravel(), scales(spec).salts["glomeruli"])
    r_mean = glomerulus_radius_px(spec)
    radius = r_mean * (1 + _SIZE_JITTER * (2 * unit(rehash(h, 3)) - 1))
    elongation = 1 - _MAX_ELONGATION * unit(rehash(h, 4))
    outer = radius / np.sqrt(elongation) * (1 + _WOBBLE_AMPLITUDE * sum(2 / math.sqrt(k) for k in WOBBLE_ORDERS))
    cands = _Candidates(
        cx=(gx.ravel() + unit(rehash(h, 1))) * cell,
        cy=(gy.ravel() + unit(rehash(h, 2))) * cell,
        radius=radius,
        elongation=elongation,
        angle=unit(rehash(h, 5)) * math.pi,
        outer=outer,
        priority=unit(rehash(h, 6)),
        hashes=h,
        keep=unit(h) < rate,
    )
    return cands, (ny, nx)


def _reject_outside(spec: SynthSpec, c: _Candidates) -> None:
    """Drop candidates whose outline could leave the image or the tissue."""
    pad = c.outer * 1.1
    c.keep &= (c.cx - pad >= 0) & (c.cy - pad >= 0)
    c.keep &= (c.cx + pad <= spec.width) & (c.cy + pad <= spec.height)
    idx = np.flatnonzero(c.keep)
    if idx.size == 0:
        return
    thr = tissue_threshold(spec)
    angles = np.arange(8) * (math.pi / 4)
    ring = 1.15 * c.outer[idx, None]
    py = np.concatenate([c.cy[idx, None], c.cy[idx, None] + ring * np.sin(angles)], axis=1)
    px = np.concatenate([c.cx[idx, None], c.cx[idx, None] + ring * np.cos(angles)], axis=1)
    py = np.clip(np.floor(py), 0, spec.height - 1)
    px = np.clip(np.floor(px), 0, spec.width - 1)
    field_ = tissue_points(spec, py, px)
    margin = EDGE_NOISE + 0.03
    inside = (field_[:, 0] > thr + 2 * margin) & (field_[:, 1:] > thr + margin).all(axis=1)
    c.keep[idx[~inside]] = False


def _reject_overlaps(c: _Candidates, grid: tuple[int, int], cell: float, gap: float) -> None:
    """Drop a candidate overlapping a kept neighbour of higher priority (local, order-free)."""
    ny, nx = grid
    reach = math.ceil((2 * c.outer.max() + gap) / cell) if c.outer.size else 0
    keep = c.keep.reshape(ny, nx)
    loser = np.zeros((ny, nx), dtype=bool)
    fields = [a.reshape(ny, nx) for a in (c.cx, c.cy, c.outer, c.priority)]
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            if dy == 0 and dx == 0:
                continue
            loser |= _conflicts(keep, fields, dy, dx, gap)
    c.keep &= ~loser.ravel()


def _conflicts(keep, fields, dy: int, dx: int, gap: float) -> np.ndarray:
    """Cells whose kept candidate overlaps the kept one at offset (dy, dx) with higher priority."""
    ny, nx = keep.shape
    out = np.zeros_like(keep)
    ys = slice(max(0, -dy), min(ny, ny - dy))
    xs = slice(max(0, -dx), min(nx, nx - dx))
    yo = slice(ys.start + dy, ys.stop + dy)
    xo = slice(xs.start + dx, xs.stop + dx)
    cx, cy, outer, prio = fields
    dist2 = (cx[ys, xs] - cx[yo, xo]) ** 2 + (cy[ys, xs] - cy[yo, xo]) ** 2
    reach = outer[ys, xs] + outer[yo, xo] + gap
    hit = keep[ys, xs] & keep[yo, xo] & (dist2 < reach * reach) & (prio[yo, xo] > prio[ys, xs])
    out[ys, xs] = hit
    return out


def _build(spec: SynthSpec, c: _Candidates, i: int) -> Glomerulus:
    """Turn candidate ``i`` into a :class:`Glomerulus` with its harmonics and polygon."""
    h = c.hashes[i : i + 1]
    wobble = np.array(
        [[_harmonic_coef(h, 10 + 2 * j, _WOBBLE_AMPLITUDE / math.sqrt(k)),
          _harmonic_coef(h, 11 + 2 * j, _WOBBLE_AMPLITUDE / math.sqrt(k))]
         for j, k in enumerate(WOBBLE_ORDERS)]
    )
    tuft = np.array(
        [[_harmonic_coef(h, 30 + 2 * j, _TUFT_AMPLITUDE / k**0.7),
          _harmonic_coef(h, 31 + 2 * j, _TUFT_AMPLITUDE / k**0.7)]
         for j, k in enumerate(TUFT_ORDERS)]
    )
    sc = scales(spec)
    radius, elong = float(c.radius[i]), float(c.elongation[i])
    rx, ry = radius / math.sqrt(elong), radius * math.sqrt(elong)
    capsule = sc.capsule_width / radius
    tuft_edge = 1.0 - capsule - sc.bowman_space / radius
    shape = GlomerulusShape(wobble, tuft, tuft_edge, capsule, int(rehash(h, 7)[0]))
    cx, cy, angle = float(c.cx[i]), float(c.cy[i]), float(c.angle[i])
    polygon = outline_polygon(cx, cy, rx, ry, angle, wobble)
    return Glomerulus(cx, cy, rx, ry, angle, polygon, shape)


def _harmonic_coef(h: np.ndarray, stream: int, amplitude: float) -> float:
    """A uniform coefficient in [-amplitude, amplitude] from hash stream ``stream``."""
    return float((2 * unit(rehash(h, stream))[0] - 1) * amplitude)


_GLOMERULI: dict = {}


def glomeruli_cached(spec: SynthSpec) -> tuple[tuple[Glomerulus, ...], np.ndarray]:
    """All glomeruli of ``spec`` and their (n, 4) int64 bboxes (y0, y1, x0, x1); cached."""
    found = _GLOMERULI.get(spec)
    if found is None:
        cands, grid = _candidates(spec)
        _reject_outside(spec, cands)
        cell, _ = _cell_size_and_rate(spec)
        _reject_overlaps(cands, grid, cell, gap=0.15 * glomerulus_radius_px(spec))
        gloms = tuple(_build(spec, cands, int(i)) for i in np.flatnonzero(cands.keep))
        boxes = np.array([g.bbox for g in gloms], dtype=np.int64).reshape(-1, 4)
        found = (gloms, boxes)
        if len(_GLOMERULI) > 16:
            _GLOMERULI.clear()
        _GLOMERULI[spec] = found
    return found


def indices_in_region(spec: SynthSpec, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Indices of glomeruli whose bbox touches [y0, y1) x [x0, x1)."""
    _, boxes = glomeruli_cached(spec)
    hit = (boxes[:, 0] < y1) & (boxes[:, 1] > y0) & (boxes[:, 2] < x1) & (boxes[:, 3] > x0)
    return np.flatnonzero(hit)

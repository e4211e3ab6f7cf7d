"""Where things are on a synthetic slide: the tissue field and the glomeruli, without rendering.

The tissue field is lattice noise of global coordinates minus a border falloff; its threshold is
calibrated once per spec so that about ``tissue_fraction`` of the slide is tissue. Glomeruli are
candidates on a jittered grid (one hashed candidate per cell), kept with a probability that gives
the requested density, rejected when they leave the image or the tissue, or when they overlap a
neighbouring candidate of higher priority. All of it is vectorised and cached per spec.
"""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from .noise import hash2, lattice_field, lattice_points, rehash, spline_table, unit
from .spec import SynthSpec, glomerulus_radius_px, pixels_per_mm2, scales

WOBBLE_ORDERS = (2, 3, 4, 5)  # harmonics of the glomerulus outline
TUFT_ORDERS = (1, 2, 3, 4, 5, 6, 7)  # harmonics of the tuft edge (1 = off-centre tuft)
_WOBBLE_AMPLITUDE = 0.045
_TUFT_AMPLITUDE = 0.05
_SIZE_JITTER = 0.30  # ± relative change of the diameter
_MAX_ELONGATION = 0.22  # ry / rx down to 1 - this
POLYGON_VERTICES = 128
ANGLE_BINS = 2048  # resolution of the per-glomerulus outline and tuft tables
_CENTRE_MARGIN = 0.08  # tissue field above threshold required at a glomerulus centre
_RING_MARGIN = 0.03  # ... and on a ring just outside its outline
_PLACEMENT_LOSS = 0.72  # share of candidates in tissue that survive the checks (calibrated)
EDGE_NOISE = 0.07  # how far (in tissue-field units) tubule noise moves the tissue edge
BORDER_PENALTY = 0.4  # tissue-field drop at the very slide border


@dataclass(eq=False)
class Glomerulus:
    """One glomerulus: centre, semi-axes and rotation (radians), and its outline polygon.

    ``polygon`` is (N, 2) [x, y] in full-resolution pixel coordinates (pixel (r, c) covers
    x in [c, c+1), y in [r, r+1)) and includes Bowman's capsule. A pixel belongs to the
    glomerulus (image and labels alike) when its centre is inside the outline that ``shape``
    describes; the polygon samples that outline (to about a tenth of a pixel).
    """

    cx: float
    cy: float
    rx: float
    ry: float
    angle: float
    polygon: np.ndarray
    label: int = 0  # its value in ground_truth_labels: index in glomeruli(spec) + 1
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


@dataclass(eq=False)
class GlomerulusShape:
    """Harmonic coefficients of the outline and tuft edge, as lookup tables over the angle.

    The renderer reads the tables with :func:`angle_index` (no trigonometry per pixel); the
    tables sample the harmonics finely enough (2048 bins) that the rendered outline stays
    within about a tenth of a pixel of the polygon.
    """

    wobble: np.ndarray  # (len(WOBBLE_ORDERS), 2) cos / sin coefficients of the outline radius
    tuft: np.ndarray  # (len(TUFT_ORDERS), 2) coefficients of the tuft edge
    tuft_edge: float  # mean normalised radius of the tuft edge
    capsule: float  # normalised capsule width

    @cached_property
    def outline_table(self) -> np.ndarray:
        """Outline radius (normalised, ~1) per angle bin, float32."""
        cos_t, sin_t = _bin_directions()
        return (1.0 + harmonics(cos_t, sin_t, WOBBLE_ORDERS, self.wobble)).astype(np.float32)

    @cached_property
    def tuft_table(self) -> np.ndarray:
        """Tuft edge (normalised radius) per angle bin, float32."""
        cos_t, sin_t = _bin_directions()
        return (self.tuft_edge + harmonics(cos_t, sin_t, TUFT_ORDERS, self.tuft)).astype(np.float32)


def angle_index(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Angle bin (0..ANGLE_BINS) of the direction (u, v), from the 'diamond angle' (no trig)."""
    den = np.abs(u) + np.abs(v)
    np.maximum(den, np.float32(1e-30), out=den)
    t = v / den  # (u, v) on the unit diamond: t in [-1, 1]
    diamond = np.where(u >= 0, t, np.float32(2.0) - t)  # in (-1, 3], continuous around the circle
    diamond += np.float32(1.0)
    diamond *= np.float32(ANGLE_BINS / 4)
    diamond += np.float32(0.5)
    return diamond.astype(np.intp)


@lru_cache(maxsize=1)
def _bin_directions() -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of the direction at the centre of each angle bin."""
    diamond = np.arange(ANGLE_BINS + 1) * (4.0 / ANGLE_BINS) - 1.0
    t = np.where(diamond <= 1.0, diamond, 2.0 - diamond)
    u = np.where(diamond <= 1.0, 1.0 - np.abs(t), np.abs(t) - 1.0)
    norm = np.hypot(u, t)
    return u / norm, t / norm


def harmonics(cos_t: np.ndarray, sin_t: np.ndarray, orders, coeffs: np.ndarray) -> np.ndarray:
    """sum_k a_k cos(k t) + b_k sin(k t) from cos t, sin t (Chebyshev recurrences, no trig)."""
    dtype = np.result_type(cos_t, sin_t)
    total = np.zeros(np.broadcast(cos_t, sin_t).shape, dtype)
    c_k, s_k = np.ones_like(total), np.zeros_like(total)
    wanted = dict(zip(orders, coeffs.astype(dtype)))
    for k in range(1, max(orders) + 1):
        c_k, s_k = c_k * cos_t - s_k * sin_t, s_k * cos_t + c_k * sin_t
        if k in wanted:
            a, b = wanted[k]
            total += a * c_k
            total += b * s_k
    return total


# --- tissue -----------------------------------------------------------------------------------


def _border_margin(size: int) -> float:
    """Width of the band along the slide border where tissue fades out, pixels."""
    return max(8.0, min(0.04 * size, 1500.0))


def _border_falloff(coords: np.ndarray, size: int) -> np.ndarray:
    """Negative penalty near the slide border along one axis (float32), 0 in the interior."""
    margin = _border_margin(size)
    dist = np.minimum(coords + 0.5, size - coords - 0.5)
    ramp = np.clip(1.0 - dist / margin, 0.0, 1.0)
    return (-BORDER_PENALTY * ramp * ramp).astype(np.float32)


def _near_border(coords: np.ndarray, size: int) -> bool:
    """Whether any of the sorted ``coords`` lies in the border band (else the falloff is 0)."""
    margin = _border_margin(size)
    return bool(coords[0] + 0.5 < margin or size - coords[-1] - 0.5 < margin)


def tissue_raw(spec: SynthSpec, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Tissue field (before thresholding) on the grid ys x xs, float32 roughly in [-1, 1]."""
    field_ = lattice_field(ys, xs, scales(spec).tissue_octaves)
    if _near_border(ys, spec.height):
        field_ += _border_falloff(ys, spec.height)[:, None]
    if _near_border(xs, spec.width):
        field_ += _border_falloff(xs, spec.width)[None, :]
    return field_


def tissue_points(spec: SynthSpec, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The tissue field of :func:`tissue_raw` at scattered integer points."""
    y = np.asarray(y, dtype=np.int64)
    x = np.asarray(x, dtype=np.int64)
    value = lattice_points(y, x, scales(spec).tissue_octaves)
    value += _border_falloff(y, spec.height)
    value += _border_falloff(x, spec.width)
    return value


@dataclass(frozen=True, eq=False)
class TissueMap:
    """The tissue noise on a coarse grid (multiples of ``step``) with a rigorous error bound.

    ``slack`` bounds |noise(p) - noise(nearest grid point)| for every pixel p (from the per-pixel
    Lipschitz constant of the quantised B-spline octaves); the border falloff is added exactly.
    Blocks far from the tissue edge can then skip the full-resolution field.
    """

    spec: SynthSpec
    step: int
    noise: np.ndarray
    slack: float

    def field_range(self, ys: np.ndarray, xs: np.ndarray) -> tuple[float, float]:
        """Lower and upper bounds of the tissue field over the samples ys x xs (sorted)."""
        half = self.step // 2
        r0, r1 = (int(ys[0]) + half) // self.step, (int(ys[-1]) + half) // self.step
        c0, c1 = (int(xs[0]) + half) // self.step, (int(xs[-1]) + half) // self.step
        part = self.noise[r0 : r1 + 1, c0 : c1 + 1]
        fall_y = _border_falloff(ys, self.spec.height)
        fall_x = _border_falloff(xs, self.spec.width)
        low = float(part.min()) - self.slack + float(fall_y.min()) + float(fall_x.min())
        return low, float(part.max()) + self.slack


def _step_lipschitz(octaves) -> float:
    """Max change of the normalised noise between neighbouring pixels along one axis."""
    total = sum(o.amplitude for o in octaves)
    bound = 0.0
    for o in octaves:
        table = spline_table(o.spacing)
        padded = np.zeros((o.spacing + 1, 5))
        padded[: o.spacing, :4] = table
        padded[o.spacing, 1:] = table[0]  # the next cell: lattice indices shift by one
        bound += o.amplitude / total * np.abs(np.diff(padded, axis=0)).sum(axis=1).max() / table[0].sum()
    return bound


_TISSUE_MAPS: dict = {}


def tissue_map(spec: SynthSpec) -> TissueMap:
    """The coarse tissue map of ``spec`` (cached)."""
    found = _TISSUE_MAPS.get(spec)
    if found is None:
        step = max(32, math.ceil(math.sqrt(spec.width * spec.height / 4e6)))
        ys = np.arange(0, spec.height - 1 + step // 2 + 1, step)
        xs = np.arange(0, spec.width - 1 + step // 2 + 1, step)
        octaves = scales(spec).tissue_octaves
        noise = np.vstack([lattice_field(ys[i : i + 256], xs, octaves) for i in range(0, len(ys), 256)])
        slack = 2 * _step_lipschitz(octaves) * (step // 2) + 1e-4
        found = TissueMap(spec, step, noise, slack)
        if len(_TISSUE_MAPS) > 8:
            _TISSUE_MAPS.clear()
        _TISSUE_MAPS[spec] = found
    return found


_THRESHOLDS: dict = {}


def tissue_threshold(spec: SynthSpec) -> float:
    """Field value above which there is tissue, calibrated on a grid to ``tissue_fraction``."""
    found = _THRESHOLDS.get(spec)
    if found is None:
        step_y, step_x = max(1, spec.height // 160), max(1, spec.width // 160)
        ys = np.arange(step_y // 2, spec.height, step_y)
        xs = np.arange(step_x // 2, spec.width, step_x)
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
    density = spec.glomeruli_per_mm2 / pixels_per_mm2(spec) / _PLACEMENT_LOSS
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
    inside = (field_[:, 0] > thr + _CENTRE_MARGIN) & (field_[:, 1:] > thr + _RING_MARGIN).all(axis=1)
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


def _coefficients(hashes: np.ndarray, first_stream: int, orders, amplitude: float, decay: float) -> np.ndarray:
    """(n, len(orders), 2) uniform harmonic coefficients, order k within ±amplitude / k**decay."""
    coeffs = np.empty((len(hashes), len(orders), 2))
    for j, k in enumerate(orders):
        for part in range(2):
            u = unit(rehash(hashes, first_stream + 2 * j + part))
            coeffs[:, j, part] = (2 * u - 1) * (amplitude / k**decay)
    return coeffs


def _outline_polygons(c: _Candidates, kept: np.ndarray, wobble: np.ndarray) -> np.ndarray:
    """(n, POLYGON_VERTICES, 2) outline polygons of the kept candidates."""
    theta = np.arange(POLYGON_VERTICES) * (2 * math.pi / POLYGON_VERTICES)
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    orders = np.array(WOBBLE_ORDERS)[:, None] * theta  # (orders, vertices)
    radius = 1.0 + wobble[:, :, 0] @ np.cos(orders) + wobble[:, :, 1] @ np.sin(orders)
    rx = (c.radius[kept] / np.sqrt(c.elongation[kept]))[:, None]
    ry = (c.radius[kept] * np.sqrt(c.elongation[kept]))[:, None]
    u, v = rx * radius * cos_t, ry * radius * sin_t
    ca, sa = np.cos(c.angle[kept])[:, None], np.sin(c.angle[kept])[:, None]
    x = c.cx[kept][:, None] + u * ca - v * sa
    y = c.cy[kept][:, None] + u * sa + v * ca
    return np.stack([x, y], axis=-1)


def _build_all(spec: SynthSpec, c: _Candidates) -> tuple[Glomerulus, ...]:
    """The kept candidates as :class:`Glomerulus` objects (label = rank + 1), vectorised."""
    kept = np.flatnonzero(c.keep)
    hashes = c.hashes[kept]
    wobble = _coefficients(hashes, 10, WOBBLE_ORDERS, _WOBBLE_AMPLITUDE, 0.5)
    tuft = _coefficients(hashes, 30, TUFT_ORDERS, _TUFT_AMPLITUDE, 0.7)
    polygons = _outline_polygons(c, kept, wobble)
    sc = scales(spec)
    gloms = []
    for n, i in enumerate(kept):
        radius, elong = float(c.radius[i]), float(c.elongation[i])
        capsule = sc.capsule_width / radius
        tuft_edge = 1.0 - capsule - sc.bowman_space / radius
        shape = GlomerulusShape(wobble[n], tuft[n], tuft_edge, capsule)
        rx, ry = radius / math.sqrt(elong), radius * math.sqrt(elong)
        gloms.append(
            Glomerulus(float(c.cx[i]), float(c.cy[i]), rx, ry, float(c.angle[i]), polygons[n], n + 1, shape)
        )
    return tuple(gloms)


_GLOMERULI: dict = {}


def glomeruli_cached(spec: SynthSpec) -> tuple[tuple[Glomerulus, ...], np.ndarray]:
    """All glomeruli of ``spec`` and their (n, 4) int64 bboxes (y0, y1, x0, x1); cached."""
    found = _GLOMERULI.get(spec)
    if found is None:
        cands, grid = _candidates(spec)
        _reject_outside(spec, cands)
        cell, _ = _cell_size_and_rate(spec)
        _reject_overlaps(cands, grid, cell, gap=0.15 * glomerulus_radius_px(spec))
        gloms = _build_all(spec, cands)
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


def _copy(g: Glomerulus) -> Glomerulus:
    """A copy the caller may modify without touching the cached layout."""
    return dataclasses.replace(g, polygon=g.polygon.copy())


def glomeruli(spec: SynthSpec) -> list[Glomerulus]:
    """All glomeruli of the slide, in label order (glomerulus i has label i + 1)."""
    gloms, _ = glomeruli_cached(spec)
    return [_copy(g) for g in gloms]


def glomeruli_in_region(spec: SynthSpec, y0: int, y1: int, x0: int, x1: int) -> list[Glomerulus]:
    """Glomeruli whose bounding box touches the full-resolution region [y0:y1, x0:x1]."""
    gloms, _ = glomeruli_cached(spec)
    return [_copy(gloms[int(i)]) for i in indices_in_region(spec, y0, y1, x0, x1)]

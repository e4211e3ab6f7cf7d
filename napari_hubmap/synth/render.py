"""Render regions of a synthetic slide, and their ground-truth glomerulus labels.

A region is rendered in blocks of at most ``_BLOCK`` samples; each block computes, from global
coordinates only, three stain concentrations (cytoplasm, PAS-positive membrane, nucleus) and a
tissue coverage, then turns them into RGB with a Beer-Lambert-like law ``glass / (1 + density)``.
Glomeruli are painted over the tubules inside their outline, which is exactly the outline the
labels use.
"""

from __future__ import annotations

import numpy as np

from .layout import (
    EDGE_NOISE,
    Glomerulus,
    angle_index,
    glomeruli_cached,
    indices_in_region,
    tissue_raw,
    tissue_map,
    tissue_threshold,
)
from .dots import dot_layer
from .noise import grain, lattice_field, lattice_grid
from .spec import PALETTES, SynthSpec, scales

_BLOCK = (256, 512)  # rows, columns of samples per block: keeps temporaries in cache

# Tubules, in units of the normalised tubule field U (|U| <= 1, std about 0.2).
_INTERSTITIUM = 0.022  # |U| below this: interstitium between two tubules
_MEMBRANE = 0.016  # half width of a basement membrane line around |U| = _INTERSTITIUM
_LUMEN = 0.36  # |U| above this: lumen
_LUMEN_RAMP = 0.04
_BRUSH = 0.03  # half width of the brush border at the lumen edge
_EPITHELIUM = 0.85  # cytoplasm concentration of epithelium
_STROMA = 0.6  # cytoplasm concentration of interstitium
_LUMEN_STAIN = 0.1  # faint cytoplasm stain of lumen content
_TUBULE_CONTRAST = 0.12  # relative cytoplasm difference between the two tubule kinds
_PROFILE_SIZE = 4096  # resolution of the tubule profile tables over U in [-1, 1]
_NUCLEI_BASAL = 0.6  # chance a nucleus cell near the basement membrane holds a nucleus
_NUCLEI_APICAL = 0.15
_NUCLEI_STROMA = 0.35

# Tissue edge and texture, in units of the thresholded tissue field.
_EDGE_SHARPNESS = 60.0  # tissue coverage ramp (per tissue-field unit)
_DEPTH_RAMP = 12.0  # per tissue-field unit: the stain reaches full depth this far inside the edge
_DEPTH_GAIN = 0.25  # stain depth goes from 1 - gain (edge) to 1 (deep)
# Deeper than this in the tissue field, coverage is 1 and depth is full (what the formulas give):
_DEEP = max(EDGE_NOISE + 2.0 / _EDGE_SHARPNESS, 1.0 / _DEPTH_RAMP) + 0.01
_FULL_DEPTH = np.float32(_DEPTH_GAIN) + np.float32(1.0 - _DEPTH_GAIN)  # = _depth() at depth 1
_GRAIN_GLASS = 0.6  # grey levels of grain on glass
_GRAIN_TISSUE = 0.12  # relative grain of the cytoplasm

# Glomerular tuft, in units of the normalised tuft field G.
_CAPILLARY = 0.12  # G above this: open capillary lumen
_CAPILLARY_RAMP = 0.08
_LOOP = 0.035  # half width of capillary loop walls around G = 0
_MATRIX = 0.15  # G below minus this: mesangial matrix
_TUFT_CYTOPLASM = 0.8
_MESANGIUM = 0.6
_BOWMAN_SPACE = 0.06  # faint cytoplasm stain of Bowman's space and the tuft's gaps
_CAPSULE_CYTOPLASM = 0.6
_NUCLEI_TUFT = 0.85


def _sample_coords(start: int, stop: int, step: int) -> np.ndarray:
    """Full-resolution pixel coordinates sampled in [start, stop) every ``step``."""
    return np.arange(start, stop, step, dtype=np.int64)


def _check_region(spec: SynthSpec, y0: int, y1: int, x0: int, x1: int, downsample: int) -> None:
    """Raise ValueError for an inverted or out-of-slide region or a bad downsample."""
    if int(downsample) != downsample or downsample < 1:
        raise ValueError(f"downsample must be a positive integer, got {downsample!r}")
    if not (0 <= y0 <= y1 <= spec.height and 0 <= x0 <= x1 <= spec.width):
        raise ValueError(
            f"region [{y0}:{y1}, {x0}:{x1}] is not inside the {spec.height} x {spec.width} slide"
        )


def render_region(spec: SynthSpec, y0: int, y1: int, x0: int, x1: int, downsample: int = 1) -> np.ndarray:
    """RGB uint8 (ceil((y1-y0)/d), ceil((x1-x0)/d), 3) of full-resolution pixels [y0:y1:d, x0:x1:d].

    Coordinates are full-resolution pixels; ``downsample`` d samples every d-th pixel, so the
    result is the same region of the pyramid level with factor d (when y0, x0 are multiples of
    d). Any tiling of a region gives the same pixels.
    """
    _check_region(spec, y0, y1, x0, x1, downsample)
    ys = _sample_coords(y0, y1, downsample)
    xs = _sample_coords(x0, x1, downsample)
    out = np.empty((len(ys), len(xs), 3), dtype=np.uint8)
    ctx = _Context.of(spec)
    for r in range(0, len(ys), _BLOCK[0]):
        for c in range(0, len(xs), _BLOCK[1]):
            by, bx = ys[r : r + _BLOCK[0]], xs[c : c + _BLOCK[1]]
            _render_block(ctx, by, bx, out[r : r + len(by), c : c + len(bx)])
    return out


class _Context:
    """Per-spec constants for rendering (palette densities, threshold, glomeruli)."""

    _cache: dict = {}

    def __init__(self, spec: SynthSpec):
        self.spec = spec
        self.scales = scales(spec)
        palette = PALETTES[spec.stain]
        self.palette = palette
        self.density = palette.optical_densities().astype(np.float32)
        self.glass = np.array(palette.glass, dtype=np.float32)
        self.threshold = np.float32(tissue_threshold(spec))
        self.tissue_map = tissue_map(spec)
        self.glomeruli, self.boxes = glomeruli_cached(spec)
        self.cytoplasm_profile, self.membrane_profile = _tubule_profiles(palette)

    @classmethod
    def of(cls, spec: SynthSpec) -> "_Context":
        found = cls._cache.get(spec)
        if found is None:
            if len(cls._cache) > 16:
                cls._cache.clear()
            found = cls._cache[spec] = cls(spec)
        return found


def _render_block(ctx: _Context, ys: np.ndarray, xs: np.ndarray, out: np.ndarray) -> None:
    """Render one block of samples (global coordinates ys x xs) into ``out`` (h, w, 3) uint8."""
    spec = ctx.spec
    gloms = indices_in_region(spec, int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1)
    grain_ = grain(ys, xs, ctx.scales.salts["grain"])
    low, high = ctx.tissue_map.field_range(ys, xs)
    low, high = low - ctx.threshold, high - ctx.threshold
    if len(gloms) == 0 and high < -EDGE_NOISE:
        return _compose(ctx, grain_, None, out)  # glass only
    tubule = lattice_field(ys, xs, ctx.scales.tubule_octaves)
    if low > _DEEP:  # coverage 1 and full stain depth everywhere
        coverage, depth = None, _FULL_DEPTH
    else:
        field_ = tissue_raw(spec, ys, xs)
        field_ -= ctx.threshold
        coverage, depth = _coverage(field_, tubule), _depth(field_)
    stains = _tubule_stains(ctx, ys, xs, tubule, grain_, depth)
    for i in gloms:
        _paint_glomerulus(ctx, int(i), ys, xs, stains, coverage)
    if coverage is not None:
        for s in stains:
            s *= coverage
    _compose(ctx, grain_, stains, out)


def _coverage(field_: np.ndarray, tubule: np.ndarray) -> np.ndarray:
    """Tissue coverage in [0, 1]: the tissue field, its edge torn along tubule boundaries."""
    cover = tubule * np.float32(EDGE_NOISE)
    cover += field_
    cover *= np.float32(_EDGE_SHARPNESS)
    return np.clip(cover, 0.0, 1.0, out=cover)


def _depth(field_: np.ndarray) -> np.ndarray:
    """Stain depth from tissue thickness: paler near the tissue edge, full deep inside."""
    depth = field_ * np.float32(_DEPTH_RAMP)
    np.clip(depth, 0.0, 1.0, out=depth)
    depth *= np.float32(_DEPTH_GAIN)
    depth += np.float32(1.0 - _DEPTH_GAIN)
    return depth


def _tubule_profiles(palette) -> tuple[np.ndarray, np.ndarray]:
    """Cytoplasm and membrane concentration as tables over the tubule field U in [-1, 1].

    |U| small: interstitium between tubules, bounded by basement membranes; |U| large: lumen,
    with a PAS-positive brush border at its edge. The sign of U picks one of two tubule types
    (proximal-like darker, distal-like paler).
    """
    u = np.linspace(-1.0, 1.0, _PROFILE_SIZE + 1)
    a = np.abs(u)
    lumen = np.clip((a - _LUMEN) / _LUMEN_RAMP, 0.0, 1.0)
    stroma = np.clip((_INTERSTITIUM - a) / _MEMBRANE, 0.0, 1.0)
    kind = 1.0 + _TUBULE_CONTRAST * np.clip(u * 12.0, -1.0, 1.0)
    epithelium = _EPITHELIUM * kind
    cyto = epithelium + (_STROMA - epithelium) * stroma + (_LUMEN_STAIN - epithelium) * lumen
    membrane = palette.membrane_weight * np.clip(1.0 - np.abs(a - _INTERSTITIUM) / _MEMBRANE, 0.0, 1.0)
    membrane += palette.brush_border * np.clip(1.0 - np.abs(a - _LUMEN) / _BRUSH, 0.0, 1.0) * kind
    return cyto.astype(np.float32), membrane.astype(np.float32)


def _profile_index(tubule: np.ndarray) -> np.ndarray:
    """Index into the profile tables for each tubule-field value."""
    idx = tubule + np.float32(1.0)
    idx *= np.float32(_PROFILE_SIZE / 2)
    idx += np.float32(0.5)
    return idx.astype(np.intp)


def _tubule_stains(ctx: _Context, ys, xs, tubule, grain_, depth) -> list[np.ndarray]:
    """Cytoplasm, membrane and nucleus concentrations of tubules and interstitium."""
    idx = _profile_index(tubule)
    cyto = np.take(ctx.cytoplasm_profile, idx)
    cyto *= depth
    texture = grain_ * np.float32(_GRAIN_TISSUE)
    texture += np.float32(1.0)
    cyto *= texture
    membrane = np.take(ctx.membrane_profile, idx)
    nuclei = _tubule_nuclei(ctx, ys, xs)
    nuclei *= texture  # chromatin
    return [cyto, membrane, nuclei]


def _ramp(a: np.ndarray, zero_at: float, one_at: float) -> np.ndarray:
    """Linear ramp of ``a`` from 0 (at ``zero_at``) to 1 (at ``one_at``), clipped; new array."""
    out = a - np.float32(zero_at)
    out *= np.float32(1.0 / (one_at - zero_at))
    return np.clip(out, 0.0, 1.0, out=out)


def _line(a: np.ndarray, at: float, half_width: float, weight: float) -> np.ndarray:
    """Triangular line profile of height ``weight`` around a == at; new array."""
    d = a - np.float32(at)
    np.abs(d, out=d)
    d *= np.float32(-weight / half_width)
    d += np.float32(weight)
    return np.maximum(d, 0.0, out=d)


def _tubule_nuclei(ctx: _Context, ys, xs) -> np.ndarray:
    """Nuclei along the epithelium (mostly basal), a few in the interstitium, none in lumens."""
    octaves = ctx.scales.tubule_octaves

    def keep(rows, cols, u):
        a = np.abs(lattice_grid(rows, cols, octaves))
        epithelium = (a > _INTERSTITIUM + 0.5 * _MEMBRANE) & (a < _LUMEN - 0.02)
        basal = a < _INTERSTITIUM + 0.4 * (_LUMEN - _INTERSTITIUM)
        chance = np.where(basal, _NUCLEI_BASAL, _NUCLEI_APICAL)
        return (epithelium & (u < chance)) | ((a < _INTERSTITIUM) & (u < _NUCLEI_STROMA))

    return dot_layer(ys, xs, ctx.scales.tubule_nuclei, ctx.scales.salts["tubule_nuclei"], keep)


def _compose(ctx: _Context, grain_: np.ndarray, stains, out: np.ndarray) -> None:
    """Write RGB = glass / (1 + sum of concentration x density) + grain, rounded, into ``out``.

    Concentrations are >= 0 and the grain is small, so values stay inside (0, 255) unclipped.
    """
    noise = grain_ * np.float32(_GRAIN_GLASS)
    noise += np.float32(0.5)  # round to nearest on the cast
    if stains is None:
        for ch in range(3):
            out[..., ch] = noise + ctx.glass[ch]
        return
    value, term = np.empty_like(noise), np.empty_like(noise)
    for ch in range(3):
        np.multiply(stains[0], ctx.density[0, ch], out=value)
        value += np.multiply(stains[1], ctx.density[1, ch], out=term)
        value += np.multiply(stains[2], ctx.density[2, ch], out=term)
        value += np.float32(1.0)
        np.divide(ctx.glass[ch], value, out=value)
        value += noise
        out[..., ch] = value


# --- glomeruli ---------------------------------------------------------------------------------


def _local(g: Glomerulus, y: np.ndarray, x: np.ndarray):
    """Normalised radius s (1 on the outline) and angle bin at pixel centres.

    ``y`` (rows, 1) and ``x`` (1, cols) are integer pixel coordinates; results (rows, cols).
    """
    ca, sa = np.cos(g.angle), np.sin(g.angle)
    py = (y + 0.5 - g.cy).astype(np.float32)
    px = (x + 0.5 - g.cx).astype(np.float32)
    u = px * np.float32(ca / g.rx) + py * np.float32(sa / g.rx)
    v = py * np.float32(ca / g.ry) - px * np.float32(sa / g.ry)
    angle = angle_index(u, v)
    u *= u
    v *= v
    u += v
    s = np.sqrt(u, out=u)
    s /= np.take(g.shape.outline_table, angle)
    return s, angle


def _inside(g: Glomerulus, ys: np.ndarray, xs: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns of the sample grid inside the glomerulus bbox."""
    y0, y1, x0, x1 = g.bbox
    rows = slice(int(np.searchsorted(ys, y0)), int(np.searchsorted(ys, y1)))
    cols = slice(int(np.searchsorted(xs, x0)), int(np.searchsorted(xs, x1)))
    return rows, cols


def _paint_glomerulus(ctx: _Context, index: int, ys, xs, stains, coverage) -> None:
    """Overwrite the stains inside glomerulus ``index``: capsule, Bowman's space, tuft.

    The tissue ``coverage`` (None: 1 everywhere) becomes 1 inside the outline.
    """
    g = ctx.glomeruli[index]
    rows, cols = _inside(g, ys, xs)
    sub_y, sub_x = ys[rows], xs[cols]
    if sub_y.size == 0 or sub_x.size == 0:
        return
    s, angle = _local(g, sub_y[:, None], sub_x[None, :])
    inside = s < 1.0
    if not inside.any():
        return
    tuft_edge = np.take(g.shape.tuft_table, angle)
    values = _glomerulus_stains(ctx, g, sub_y, sub_x, s, tuft_edge)
    for target, value in zip(stains, values):
        np.copyto(target[rows, cols], value, where=inside)
    if coverage is not None:
        np.copyto(coverage[rows, cols], 1.0, where=inside)


def _glomerulus_stains(ctx: _Context, g: Glomerulus, ys, xs, s, tuft_edge):
    """Stain concentrations (cytoplasm, membrane, nuclei) of a glomerulus on its bbox samples."""
    f32 = np.float32
    capsule_in = 1.0 - g.shape.capsule
    tuft = s < tuft_edge
    capsule = s >= capsule_in
    field_ = lattice_field(ys, xs, ctx.scales.tuft_octaves)
    open_lumen = _ramp(field_, _CAPILLARY, _CAPILLARY + _CAPILLARY_RAMP)
    mesangium = _ramp(field_, -_MATRIX, -_MATRIX - _CAPILLARY_RAMP)
    mesangium += _line(field_, 0.0, _LOOP, 1.0)  # capillary loop walls
    rim = np.clip((tuft_edge - s) * f32(30.0), 0.0, 1.0)  # tuft edge slightly softened
    open_lumen *= f32(-0.9 * _TUFT_CYTOPLASM)
    open_lumen += f32(_TUFT_CYTOPLASM)
    cyto = np.where(tuft, open_lumen * rim, f32(0))
    cyto += f32(_BOWMAN_SPACE)
    cyto[capsule] = _CAPSULE_CYTOPLASM
    weight = ctx.palette.membrane_weight
    membrane = np.where(tuft, f32(_MESANGIUM * weight) * mesangium * rim, f32(0))
    membrane[capsule] = weight * _capsule_profile(s[capsule], capsule_in)
    nuclei = _tuft_nuclei(ctx, g, ys, xs)
    nuclei += f32(ctx.palette.tuft_haze) * rim
    nuclei *= tuft
    return cyto, membrane, nuclei


def _capsule_profile(s: np.ndarray, capsule_in: float) -> np.ndarray:
    """Membrane concentration across the capsule: strongest in its middle."""
    t = (s - np.float32(capsule_in)) * np.float32(1.0 / (1.0 - capsule_in))
    return 0.55 + 0.45 * np.clip(1.0 - np.abs(2.0 * t - 1.0), 0.0, 1.0)


def _tuft_nuclei(ctx: _Context, g: Glomerulus, ys, xs) -> np.ndarray:
    """Dense tuft nuclei: two jittered dot layers, kept off the capillary lumens."""
    sc = ctx.scales

    def keep(rows, cols, u):
        s, angle = _local(g, rows[:, None], cols[None, :])
        edge = np.take(g.shape.tuft_table, angle)
        f = lattice_grid(rows, cols, sc.tuft_octaves)
        return (s < edge - 0.03) & (f < _CAPILLARY) & (u < _NUCLEI_TUFT)

    layers = [
        dot_layer(ys, xs, style, sc.salts[name], keep)
        for style, name in zip(sc.tuft_nuclei, ("tuft_nuclei", "tuft_nuclei2"))
    ]
    return np.maximum(layers[0], layers[1], out=layers[0])


# --- labels ------------------------------------------------------------------------------------


def ground_truth_labels(spec: SynthSpec, y0: int, y1: int, x0: int, x1: int, downsample: int = 1) -> np.ndarray:
    """int32 labels of [y0:y1:d, x0:x1:d]: glomerulus i of ``glomeruli(spec)`` is i + 1, else 0.

    A sample is inside a glomerulus when its pixel centre is inside the outline (the curve
    the polygon samples), exactly where the renderer paints the glomerulus.
    """
    _check_region(spec, y0, y1, x0, x1, downsample)
    ys = _sample_coords(y0, y1, downsample)
    xs = _sample_coords(x0, x1, downsample)
    labels = np.zeros((len(ys), len(xs)), dtype=np.int32)
    gloms, _ = glomeruli_cached(spec)
    for i in indices_in_region(spec, y0, y1, x0, x1):
        g = gloms[int(i)]
        rows, cols = _inside(g, ys, xs)
        if rows.stop <= rows.start or cols.stop <= cols.start:
            continue
        s, _ = _local(g, ys[rows][:, None], xs[cols][None, :])
        np.copyto(labels[rows, cols], int(i) + 1, where=s < 1.0)
    return labels

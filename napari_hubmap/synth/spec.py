"""The synthetic slide's parameters (:class:`SynthSpec`), stain palettes and derived pixel scales."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .dots import DotStyle
from .noise import Octave, mix_int

STAINS = ("pas", "he")


@dataclass(frozen=True)
class SynthSpec:
    """A synthetic kidney whole-slide image: size, seed, stain and tissue statistics.

    Sizes in the tissue are physical (µm) and converted with ``mpp`` (µm per pixel).
    ``glomeruli_per_mm2`` counts glomeruli per mm² of tissue; ``tissue_fraction`` is the share of
    the slide covered by tissue (the rest is glass).
    """

    width: int
    height: int
    seed: int = 0
    stain: str = "pas"
    mpp: float = 0.5
    glomerulus_diameter_um: float = 100.0
    glomeruli_per_mm2: float = 4.0
    tissue_fraction: float = 0.6

    def __post_init__(self):
        if self.width < 1 or self.height < 1:
            raise ValueError(f"slide size must be positive, got {self.width} x {self.height}")
        if self.stain not in STAINS:
            raise ValueError(f"stain must be one of {STAINS}, got {self.stain!r}")
        if not self.mpp > 0 or not self.glomerulus_diameter_um > 0:
            raise ValueError("mpp and glomerulus_diameter_um must be positive")
        if not 0.0 < self.tissue_fraction <= 1.0:
            raise ValueError(f"tissue_fraction must be in (0, 1], got {self.tissue_fraction}")
        if self.glomeruli_per_mm2 < 0:
            raise ValueError("glomeruli_per_mm2 must be >= 0")

    def px(self, microns: float) -> float:
        """Convert a length in µm to pixels."""
        return microns / self.mpp


@dataclass(frozen=True)
class Palette:
    """Glass colour and the colour each stain component gives at concentration 1 (RGB 0-255)."""

    glass: tuple[float, float, float]
    cytoplasm: tuple[float, float, float]
    membrane: tuple[float, float, float]
    nucleus: tuple[float, float, float]
    membrane_weight: float  # how strongly basement membranes / capsule take the stain
    brush_border: float  # PAS-positive luminal border of proximal tubules
    tuft_haze: float  # diffuse nuclear stain of the glomerular tuft (bluish in H&E)

    def optical_densities(self) -> np.ndarray:
        """(3 components, 3 channels) densities x with glass / (1 + x) = component colour."""
        glass = np.array(self.glass)
        comps = np.array([self.cytoplasm, self.membrane, self.nucleus])
        return glass[None, :] / comps - 1.0


PALETTES = {
    # Colours measured on real PAS tiles: cytoplasm ~(210, 172, 206), nuclei ~(100, 70, 135).
    "pas": Palette(
        glass=(243.0, 241.0, 244.0),
        cytoplasm=(205.0, 164.0, 200.0),
        membrane=(172.0, 42.0, 132.0),
        nucleus=(107.0, 79.0, 150.0),
        membrane_weight=1.0,
        brush_border=0.45,
        tuft_haze=0.05,
    ),
    # Real H&E: cytoplasm ~(220, 172, 210), nuclei ~(95, 90, 140), glomerular tuft bluish.
    "he": Palette(
        glass=(250.0, 249.0, 251.0),
        cytoplasm=(215.0, 160.0, 204.0),
        membrane=(212.0, 132.0, 186.0),
        nucleus=(100.0, 107.0, 157.0),
        membrane_weight=0.5,
        brush_border=0.0,
        tuft_haze=0.12,
    ),
}


@dataclass(frozen=True)
class Scales:
    """Everything derived from a spec that rendering and placement need (pixels, salts)."""

    spec: SynthSpec
    salts: dict = field(compare=False, repr=False)

    @cached_property
    def tissue_octaves(self) -> tuple[Octave, ...]:
        """Tissue blobs: one large octave sized to the slide and lobes (smooth: the ragged
        edge comes from the tubule field, so blocks far from the edge can be classified cheaply).
        """
        s = self.spec
        big = int(min(max(min(s.width, s.height) // 3, s.px(250), 32), 12000))
        mid = int(max(min(big // 4, s.px(350)), s.px(120), 16))
        return (Octave(big, 12, self.salts["tissue0"]), Octave(mid, 4, self.salts["tissue1"]))

    @cached_property
    def tubule_octaves(self) -> tuple[Octave, ...]:
        """Tubule cross-sections: zero crossings of this field are basement membranes."""
        return (
            Octave(max(6, round(self.spec.px(TUBULE_SPACING_UM))), 3, self.salts["tubule0"]),
            Octave(max(4, round(self.spec.px(TUBULE_SPACING_UM * 0.55))), 1, self.salts["tubule1"]),
        )

    @cached_property
    def tuft_octaves(self) -> tuple[Octave, ...]:
        """Glomerular tuft: capillary loops and mesangium."""
        return (
            Octave(max(3, round(self.spec.px(6.5))), 3, self.salts["tuft0"]),
            Octave(max(3, round(self.spec.px(3.5))), 1, self.salts["tuft1"]),
        )

    @cached_property
    def tubule_nuclei(self) -> DotStyle:
        """Nuclei of tubular epithelium and interstitium."""
        return _dot_style(self.spec, cell_um=8.0, r_min_um=2.1, r_max_um=2.8)

    @cached_property
    def tuft_nuclei(self) -> tuple[DotStyle, DotStyle]:
        """Two layers of denser, slightly smaller nuclei of the glomerular tuft."""
        return (
            _dot_style(self.spec, cell_um=6.0, r_min_um=1.7, r_max_um=2.3),
            _dot_style(self.spec, cell_um=7.0, r_min_um=1.7, r_max_um=2.3),
        )

    @cached_property
    def capsule_width(self) -> float:
        """Bowman's capsule (basement membrane + parietal cells), pixels."""
        return max(1.5, self.spec.px(2.2))

    @cached_property
    def bowman_space(self) -> float:
        """Mean width of the pale Bowman's space, pixels."""
        return max(1.5, self.spec.px(6.0))


TUBULE_SPACING_UM = 16.0  # lattice spacing of the tubule field (tubules ~ 3x this across)


def _dot_style(spec: SynthSpec, cell_um: float, r_min_um: float, r_max_um: float) -> DotStyle:
    """Nuclei of the given physical size; at coarse mpp the cell grows so the dots still fit."""
    r_min, r_max = max(0.6, spec.px(r_min_um)), max(0.8, spec.px(r_max_um))
    min_aspect = 0.7
    fit = 2 * int(np.ceil(r_max / min_aspect**0.5))
    return DotStyle(max(fit, round(spec.px(cell_um))), r_min, r_max, min_aspect)


_SALT_NAMES = (
    "tissue0", "tissue1", "tubule0", "tubule1", "tuft0", "tuft1", "grain",
    "tubule_nuclei", "tuft_nuclei", "tuft_nuclei2", "glomeruli",
)
_SCALES_CACHE: dict = {}


def scales(spec: SynthSpec) -> Scales:
    """Derived scales and salts of ``spec`` (cached per spec)."""
    found = _SCALES_CACHE.get(spec)
    if found is None:
        salts = {name: mix_int(spec.seed, k, 0x5EED) for k, name in enumerate(_SALT_NAMES)}
        found = Scales(spec, salts)
        if len(_SCALES_CACHE) > 64:
            _SCALES_CACHE.clear()
        _SCALES_CACHE[spec] = found
    return found


def glomerulus_radius_px(spec: SynthSpec) -> float:
    """Mean glomerulus radius (outline including the capsule), pixels."""
    return spec.px(spec.glomerulus_diameter_um) / 2.0


def pixels_per_mm2(spec: SynthSpec) -> float:
    """Pixels in one mm²."""
    return (1000.0 / spec.mpp) ** 2


def ceil_div(a: int, b: int) -> int:
    """Integer ceiling division."""
    return -(-a // b)


"""Sample data: one real HuBMAP PAS tile shipped in the package, and synthetic kidney slides.

Each returns the slide as an image layer (the synthetic ones multiscale, written once to the cache
folder and opened lazily) and its glomeruli as a labels layer placed over it (ground truth: the tile's
LabelMe polygons; the synthetic slides' own, rendered at 1/4 resolution).
"""

from __future__ import annotations

from pathlib import Path

from .slide import cache_root, open_slide
from .reader import slide_layer_data

SAMPLE_SIZE = (6144, 8192)
LABEL_DOWNSAMPLE = 4
HUBMAP_TILE = Path(__file__).parent / "samples" / "hubmap-pas-337.jpg"
"""A real HuBMAP PAS tile (TMC-Vanderbilt kidney, 1600 x 1200, 10 annotated glomeruli), from the
cns-iu/ccf-research-ftu repository (MIT licence); its LabelMe annotations lie beside it (.json)."""
HUBMAP_TILE_MPP = 1.0
"""µm per pixel of the tile (a 0.5 µm/px scan shown 2x down); the JPEG carries none."""


def hubmap_tile_path() -> Path:
    """The tile copied once into the samples folder beside the synthetic ones, so that what is made
    from it (predictions, labels: the panels write beside the slide) never lands in the package."""
    import shutil

    from .atomic import atomic_path

    path = cache_root().parent / "samples" / HUBMAP_TILE.name
    if not path.exists() or path.stat().st_size != HUBMAP_TILE.stat().st_size:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            shutil.copyfile(HUBMAP_TILE, tmp)
    return path


def sample_hubmap_tile() -> list[tuple]:
    """The real HuBMAP PAS tile at its µm/px, and its annotated glomeruli."""
    from .annotations import read_annotations, rasterize

    slide = open_slide(hubmap_tile_path(), mpp=HUBMAP_TILE_MPP)
    shape = slide.levels[0].shape[:2]
    labels = rasterize(read_annotations(HUBMAP_TILE.with_suffix(".json")), shape)
    label_kwargs = {"name": "glomeruli (ground truth)", "opacity": 0.4, "visible": False}
    return [slide_layer_data(slide, name="HuBMAP PAS tile"), (labels, label_kwargs, "labels")]


def sample_slide_path(stain: str = "pas", seed: int = 0) -> Path:
    """Path of the sample slide, generating it the first time (a few seconds)."""
    from .synth import SynthSpec, write_synthetic_tiff

    height, width = SAMPLE_SIZE
    path = cache_root().parent / "samples" / f"synthetic-{stain}-{width}x{height}-seed{seed}.tif"
    if not path.exists():
        spec = SynthSpec(width=width, height=height, seed=seed, stain=stain)
        write_synthetic_tiff(path, spec)
    return path


def sample_layers(stain: str) -> list[tuple]:
    from .synth import SynthSpec, ground_truth_labels

    path = sample_slide_path(stain)
    slide = open_slide(path, build_cache=True)
    height, width = SAMPLE_SIZE
    spec = SynthSpec(width=width, height=height, seed=0, stain=stain)
    labels = ground_truth_labels(spec, 0, height, 0, width, downsample=LABEL_DOWNSAMPLE)
    f = LABEL_DOWNSAMPLE
    label_kwargs = {"name": "glomeruli (ground truth)", "scale": (f, f), "translate": ((f - 1) / 2, (f - 1) / 2), "opacity": 0.4}
    return [slide_layer_data(slide, name=f"synthetic {stain.upper()} slide"), (labels, label_kwargs, "labels")]


def sample_pas_slide() -> list[tuple]:
    return sample_layers("pas")


def sample_he_slide() -> list[tuple]:
    return sample_layers("he")

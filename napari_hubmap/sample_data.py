"""Sample data: a synthetic kidney slide written once to the cache folder, opened lazily.

Returns the slide as a multiscale image layer and its glomeruli as a labels layer (ground truth,
rendered at 1/4 resolution and placed over the slide).
"""

from __future__ import annotations

from pathlib import Path

from .slide import cache_root, open_slide
from .reader import slide_layer_data

SAMPLE_SIZE = (6144, 8192)
LABEL_DOWNSAMPLE = 4


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

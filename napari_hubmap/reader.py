"""napari reader contribution: a slide file -> one lazy multiscale RGB image layer.

No napari import here: napari calls :func:`get_reader` through the npe2 manifest and receives
layer-data tuples. The pyramid cache of a single-level slide starts building in the background.
"""

from __future__ import annotations

import os
from pathlib import Path

from .slide import Slide, SlideScale, is_slide_path, open_slide


def get_reader(path: str | list[str]):
    """Return a reader function for slide files we can open, else None (napari tries others)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(is_slide_path(p) and os.path.exists(p) for p in paths):  # a folder: DICOM instances
        return None
    return read_slides


def read_slides(path: str | list[str]) -> list[tuple]:
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [slide_layer_data(open_slide(p, build_cache=True)) for p in paths]


def slide_of(layer) -> Slide | None:
    """The core Slide behind an image layer opened by this plugin, else None."""
    meta = getattr(layer, "metadata", {}).get("napari_hubmap") if layer is not None else None
    return meta.get("slide") if meta else None


def set_layer_mpp(layer, value) -> SlideScale | None:
    """Give the µm/px of the slide behind ``layer`` (None or blank: back to the file's, else assumed) and
    keep the layer's metadata in step; what inference on that slide then uses. None for other layers."""
    slide = slide_of(layer)
    if slide is None:
        return None
    scale = slide.set_mpp(value)
    layer.metadata["napari_hubmap"].update(scale.as_dict())
    return scale


def slide_layer_data(slide: Slide, name: str | None = None) -> tuple:
    """A (data, kwargs, "image") tuple showing ``slide`` as a multiscale RGB layer."""
    data = slide.levels if len(slide.levels) > 1 else slide.levels[0]
    kwargs = {
        "name": name or Path(slide.path).name,
        "rgb": True,
        "multiscale": len(slide.levels) > 1,
        "contrast_limits": [0, 255],
        "metadata": {"napari_hubmap": {"slide": slide, **slide.info()}},
    }
    return (data, kwargs, "image")


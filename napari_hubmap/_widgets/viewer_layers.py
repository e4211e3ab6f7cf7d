"""What the panels read off the viewer and its layers, shared so that no panel imports another.

No Qt here and no napari import: these read the public attributes of a napari viewer and its layers.
"""

from __future__ import annotations

from ..reader import slide_of


def probability_meta(layer) -> dict | None:
    """The napari_hubmap metadata of a probability image layer (made by the Inference panel)."""
    meta = getattr(layer, "metadata", {}).get("napari_hubmap") if layer is not None else None
    return meta if meta and meta.get("probability") else None


def camera_of(viewer):
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def last_slide(viewer):
    """The :class:`~napari_hubmap.slide.Slide` of the topmost slide layer (opened with napari-hubmap), or None."""
    return next((slide_of(layer) for layer in reversed(viewer.layers) if slide_of(layer) is not None), None)


def current_slide_layer(viewer):
    """The selected layer if it is a slide, else the topmost slide layer, else None."""
    active = viewer.layers.selection.active
    if slide_of(active) is not None:
        return active
    return next((layer for layer in reversed(viewer.layers) if slide_of(layer) is not None), None)


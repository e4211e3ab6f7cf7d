"""A project slide as napari layer-data tuples ``(data, kwargs, layer_type)``; no napari import here.

Layers, bottom to top: the slide (multiscale RGB), the prediction (probability, image), the ground
truth, the pseudo-labels, the edits (an :class:`~.edits.EditStore`, editable) and the review grid
(a shapes layer: one rectangle per reviewed tile, coloured by state). Working-scale layers get
``scale = (d, d)`` and ``translate = ((d - 1) / 2,) * 2`` so pixel centres sit on the slide's.
Each layer's ``metadata["napari_hubmap"]`` says ``project``, ``slide_id`` and ``role`` (the slide layer
keeps the reader's ``slide`` object there too).
"""

from __future__ import annotations

STATE_COLOURS = {"accepted": "#2ca02c", "corrected": "#1f77b4", "dropped": "#d62728", "unreviewed": "#aaaaaa"}


def placement(downscale: float) -> dict:
    d = float(downscale)
    return {"scale": (d, d), "translate": ((d - 1) / 2, (d - 1) / 2)}


def _meta(project, slide_id: str, role: str, **extra) -> dict:
    return {"napari_hubmap": {"project": str(project.root), "slide_id": slide_id, "role": role, **extra}}


def review_rectangles(project, slide_id: str) -> tuple[list, list[str]]:
    """(rectangles as (4, 2) corner lists in working-scale pixels, states) of the reviewed tiles."""
    from .tiles import tile_of_key

    shape = project.working_shape(slide_id)
    rects, states = [], []
    for key, entry in sorted(project.review.slides.get(slide_id, {}).items()):
        if entry["state"] == "unreviewed":
            continue
        t = tile_of_key(shape, project.tile_size, key)
        rects.append([[t.y0, t.x0], [t.y0, t.x1], [t.y1, t.x1], [t.y1, t.x0]])
        states.append(entry["state"])
    return rects, states


def project_layers(project, slide_id: str, *, edits=None) -> list[tuple]:
    """Layer-data tuples restoring a slide of ``project``; ``edits``: the open, writable
    :class:`~.edits.EditStore` to paint into (the caller owns it and its Autosaver), else none."""
    from ..reader import slide_layer_data
    from ..slide import open_slide
    from ..stores.labels import open_labels
    from ..stores.probability import open_probability

    entry = project.slide(slide_id)
    place = placement(project.downscale)
    opened = open_slide(project.resolve(entry.path), build_cache=True, mpp=entry.given_mpp)
    layers = [slide_layer_data(opened, name=slide_id)]
    layers[0][1]["metadata"]["napari_hubmap"].update(_meta(project, slide_id, "slide")["napari_hubmap"])
    for n, prediction in enumerate(entry.predictions):
        levels, _ = open_probability(project.resolve(prediction.path))
        levels = levels[prediction.level :]
        layers.append((levels if len(levels) > 1 else levels[0], {
            "name": f"{slide_id} prediction" + (f" {n + 1}" if n else ""), "multiscale": len(levels) > 1,
            "contrast_limits": [0, 255], "colormap": "magma", "opacity": 0.5, "visible": n == 0, **place,
            "metadata": _meta(project, slide_id, "probability", index=n, threshold=prediction.threshold)}, "image"))
    sources = []
    if entry.ground_truth is not None:
        sources.append(("ground truth", "ground_truth", entry.ground_truth.labels))
    if entry.predictions and entry.predictions[0].pseudo_labels:
        sources.append(("pseudo-labels", "pseudo_labels", entry.predictions[0].pseudo_labels))
    for label, role, recorded in sources:
        levels, _ = open_labels(project.resolve(recorded))
        layers.append((levels if len(levels) > 1 else levels[0], {
            "name": f"{slide_id} {label}", "multiscale": len(levels) > 1, "opacity": 0.5, **place,
            "visible": role == "ground_truth", "metadata": _meta(project, slide_id, role)}, "labels"))
    if edits is not None:
        layers.append((edits, {"name": f"{slide_id} edits", "opacity": 0.6, **place,
                               "metadata": _meta(project, slide_id, "edits")}, "labels"))
    rects, states = review_rectangles(project, slide_id)
    layers.append((rects, {
        "name": f"{slide_id} review", "shape_type": "rectangle", "edge_width": max(2.0, project.tile_size / 128),
        "edge_color": [STATE_COLOURS[s] for s in states] or "#aaaaaa", "face_color": "transparent", **place,
        "properties": {"state": states}, "metadata": _meta(project, slide_id, "review")}, "shapes"))
    return layers

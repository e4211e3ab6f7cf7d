"""Start napari with slides (or the sample slide) loaded and the plugin's widgets docked."""

from __future__ import annotations

from ..defaults import DEFAULT_SAMPLE

DOCKED_WIDGETS = ("Slide", "Inference", "Post-processing", "Review", "Training")
"""Every panel of the loop, in its order: open, infer, tune, curate, retrain."""
TABBED_WITH_PREVIOUS = {"Inference", "Review", "Training"}
"""Five panels do not fit one above the other: Slide and Inference share a tab group, Post-processing
starts a second group with Review and Training as tabs; the first tab of each group is shown."""
SHOWN_TABS = ("Inference", "Post-processing")


def make_viewer(slides: list[str] | None = None, *, sample: str = DEFAULT_SAMPLE, show: bool = True,
                predict: str | None = None, mpp: float | None = None):
    """A napari viewer showing ``slides`` (else the sample), with this plugin's widgets docked.

    ``predict``: a model name to run on the (last) slide once the Inference panel has listed the models.
    ``mpp``: the slides' µm/px (as the Slide panel's field sets it: :func:`~napari_hubmap.reader.set_layer_mpp`).
    """
    import napari

    from ..reader import set_layer_mpp

    viewer = napari.Viewer(title="napari-hubmap", show=show)
    viewer.window.resize(1500, 950)
    if slides:
        for path in slides:
            viewer.open(path, plugin="napari-hubmap")
    elif sample:
        viewer.open_sample("napari-hubmap", sample)
    if mpp is not None:
        for layer in viewer.layers:
            set_layer_mpp(layer, mpp)
    docks = {}
    for name in DOCKED_WIDGETS:
        docks[name], widget = viewer.window.add_plugin_dock_widget(
            "napari-hubmap", name, tabify=name in TABBED_WITH_PREVIOUS)
        if name == "Inference" and predict:
            widget.run_when_listed([predict])
    from qtpy.QtCore import QTimer

    for name in SHOWN_TABS:  # once the tab bars exist (napari raises the last tab added)
        QTimer.singleShot(0, docks[name].raise_)
    return viewer


def docked(viewer, kind):
    """The docked panel of class ``kind``, or None."""
    for dock in list(viewer.window.dock_widgets.values()):
        if isinstance(dock, kind):
            return dock
    return None


def inference_panel(viewer):
    """The docked Inference panel, or None."""
    from .inference_panel import InferencePanel

    return docked(viewer, InferencePanel)


def run_viewer(slides: list[str] | None = None, *, sample: str = DEFAULT_SAMPLE, screenshot: str | None = None,
               predict: str | None = None, wait_s: float = 600.0, mpp: float | None = None) -> None:
    """Open the viewer and run the Qt event loop (or save a screenshot and quit).

    With ``predict`` and ``screenshot``, the screenshot waits for the inference to finish and for the
    Post-processing panel's live labels of the view (at most ``wait_s``).
    """
    import time

    import napari

    from .postprocess_panel import PostprocessPanel

    viewer = make_viewer(slides, sample=sample, predict=predict, mpp=mpp)
    if screenshot:
        from qtpy.QtCore import QTimer

        started = time.monotonic()

        def snap():
            panel = inference_panel(viewer) if predict else None
            busy = panel is not None and (panel.running or panel._run_once_listed is not None)
            tuning = docked(viewer, PostprocessPanel) if predict else None
            busy = busy or (tuning is not None and tuning.live_settling)
            if busy and time.monotonic() - started < wait_s:
                QTimer.singleShot(1000, snap)
                return
            viewer.reset_view()
            viewer.screenshot(screenshot, canvas_only=False, flash=False)
            viewer.close()

        QTimer.singleShot(4000, snap)
    napari.run()

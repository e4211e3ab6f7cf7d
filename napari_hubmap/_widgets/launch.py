"""Start napari with slides (or the sample slide) loaded and the plugin's widgets docked."""

from __future__ import annotations

DOCKED_WIDGETS = ("Slide", "Inference", "Post-processing")


def make_viewer(slides: list[str] | None = None, *, sample: str = "synthetic-pas", show: bool = True):
    """A napari viewer showing ``slides`` (else the sample), with this plugin's widgets docked."""
    import napari

    viewer = napari.Viewer(title="napari-hubmap", show=show)
    viewer.window.resize(1500, 950)
    if slides:
        for path in slides:
            viewer.open(path, plugin="napari-hubmap")
    elif sample:
        viewer.open_sample("napari-hubmap", sample)
    for name in DOCKED_WIDGETS:
        viewer.window.add_plugin_dock_widget("napari-hubmap", name)
    return viewer


def run_viewer(slides: list[str] | None = None, *, sample: str = "synthetic-pas", screenshot: str | None = None) -> None:
    """Open the viewer and run the Qt event loop (or save a screenshot and quit)."""
    import napari

    viewer = make_viewer(slides, sample=sample)
    if screenshot:
        from qtpy.QtCore import QTimer

        def snap():
            viewer.reset_view()
            viewer.screenshot(screenshot, canvas_only=False, flash=False)
            viewer.close()

        QTimer.singleShot(4000, snap)
    napari.run()

"""Slide panel: what the selected slide is, its pyramid cache progress, open slides, import labels.

Thin: every button calls one core function; long work (the pyramid cache) runs in a core
background thread whose progress this panel polls, refreshing the layer when the cache is ready.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..annotations.overlay import load_annotation_labels
from ..errors import HubmapInputError

SLIDE_FILTER = "Slides (*.tif *.tiff *.svs *.btf *.png *.jpg *.jpeg);;All files (*)"
ANNOTATION_FILTER = "Annotations (*.json *.geojson *.csv *.png *.tif *.tiff);;All files (*)"


def slide_of(layer):
    """The core Slide behind an image layer opened by this plugin, else None."""
    meta = getattr(layer, "metadata", {}).get("napari_hubmap") if layer is not None else None
    return meta.get("slide") if meta else None


def describe(slide) -> str:
    mpp = f"{slide.mpp:.3f} µm/px" if slide.mpp else "µm/px unknown"
    levels = " · ".join(f"{h}×{w}" for h, w in (lvl.shape[:2] for lvl in slide.levels))
    return f"{slide.width} × {slide.height} px, {mpp}\nlayout {slide.layout}, {slide.dtype}\nlevels: {levels}"


class SlidePanel(QWidget):
    """Dock widget: slide info, pyramid-cache progress, open slide, import annotations."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.info = QLabel("No slide selected")
        self.info.setWordWrap(True)
        self.cache_label = QLabel("")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setVisible(False)
        self.open_button = QPushButton("Open slide…")
        self.import_button = QPushButton("Import annotations…")
        layout = QVBoxLayout(self)
        for widget in (self.info, self.cache_label, self.progress, self.open_button, self.import_button):
            layout.addWidget(widget)
        layout.addStretch(1)
        self.open_button.clicked.connect(self._choose_slide)
        self.import_button.clicked.connect(self._choose_annotations)
        self.viewer.layers.selection.events.active.connect(self._update)
        self.viewer.layers.events.inserted.connect(self._update)
        self._refreshed: set[int] = set()
        self.timer = QTimer(self)
        self.timer.setInterval(250)
        self.timer.timeout.connect(self._poll_cache)
        self.timer.start()
        self._update()

    def current_layer(self):
        active = self.viewer.layers.selection.active
        if slide_of(active) is not None:
            return active
        return next((layer for layer in reversed(self.viewer.layers) if slide_of(layer) is not None), None)

    def _update(self, *_):
        layer = self.current_layer()
        self.info.setText(describe(slide_of(layer)) if layer else "No slide selected")
        self._poll_cache()

    def _poll_cache(self):
        layer = self.current_layer()
        slide = slide_of(layer)
        cache = slide.cache if slide else None
        if cache is None:
            self.cache_label.setText("pyramid: from the file" if slide else "")
            self.progress.setVisible(False)
            return
        state = cache.build_state
        if cache.complete:
            self.cache_label.setText("pyramid cache: ready")
            self.progress.setVisible(False)
            if id(layer) not in self._refreshed:
                self._refreshed.add(id(layer))
                layer.refresh()
        elif state is not None and state.error is not None:
            self.cache_label.setText(f"pyramid cache failed: {state.error}")
            self.progress.setVisible(False)
        elif state is not None:
            self.cache_label.setText(f"building pyramid cache… {100 * state.fraction:.0f}%")
            self.progress.setVisible(True)
            self.progress.setValue(int(1000 * state.fraction))
            layer.refresh()
        else:
            self.cache_label.setText("pyramid cache: not built")

    def _choose_slide(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open slide", "", SLIDE_FILTER)
        if path:
            self.viewer.open(path, plugin="napari-hubmap")

    def _choose_annotations(self):
        path, _ = QFileDialog.getOpenFileName(self, "Import annotations", "", ANNOTATION_FILTER)
        if path:
            self.import_annotations(path)

    def import_annotations(self, path: str):
        """Add the annotations in ``path`` as a labels layer over the current slide."""
        layer = self.current_layer()
        slide = slide_of(layer)
        if slide is None:
            self.viewer.status = "Open a slide first"
            return None
        try:
            labels, downsample = load_annotation_labels(path, (slide.height, slide.width))
        except HubmapInputError as exc:
            self.viewer.status = str(exc)
            raise
        # label pixel i covers slide pixels [i*f, (i+1)*f): its centre sits at i*f + (f-1)/2
        scale = tuple(s * downsample for s in layer.scale[:2])
        translate = tuple(t + (downsample - 1) / 2 * s for t, s in zip(layer.translate[:2], layer.scale[:2]))
        return self.viewer.add_labels(labels, name=Path(path).stem, scale=scale, translate=translate, opacity=0.5)

"""Slide panel: what the selected slide is (with its label image, when the file has one), its µm/px, its pyramid
cache progress, open slides, import labels.

Thin: every button calls one core function (the µm/px field :func:`~napari_hubmap.reader.set_layer_mpp`,
which the Inference panel's runs then follow); long work (the pyramid cache) runs in a core
background thread whose progress this panel polls, refreshing the layer when the cache is ready.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..annotations.overlay import load_annotation_labels
from ..defaults import DEFAULT_MPP
from ..errors import HubmapInputError
from ..reader import set_layer_mpp, slide_of

SLIDE_FILTER = ("Slides (*.tif *.tiff *.svs *.btf *.ndpi *.scn *.bif *.mrxs *.vms *.vmu *.dcm *.png *.jpg *.jpeg);;"
                "All files (*)")
PREVIEW_SIZE = 200  # px: the label image is shown at most this wide or tall
ANNOTATION_FILTER = "Annotations (*.json *.geojson *.csv *.png *.tif *.tiff);;All files (*)"


MPP_TIP = (f"µm per pixel of the slide, for files that carry none (PNG, JPEG, bare TIFF); it wins over the file's. "
           f"Blank: the file's, else {DEFAULT_MPP:g} assumed. Inference follows it.")


def describe(slide) -> str:
    levels = " · ".join(f"{h}×{w}" for h, w in (lvl.shape[:2] for lvl in slide.levels))
    head = f"{slide.width} × {slide.height} px, {slide.scale.describe()}"
    return f"{head}\nlayout {slide.layout}, {slide.dtype}\nlevels: {levels}"


def mpp_text(slide) -> str:
    """What the µm/px field shows: the µm/px given or the file's; blank when assumed (the placeholder says it)."""
    scale = slide.scale if slide is not None else None
    return "" if scale is None or scale.assumed else f"{scale.mpp:g}"


class SlidePanel(QWidget):
    """Dock widget: slide info, pyramid-cache progress, open slide, import annotations."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.info = QLabel("No slide selected")
        self.info.setWordWrap(True)
        self.preview = QLabel()  # the slide's label image (else macro, else thumbnail) from the file
        self.preview.setVisible(False)
        self.preview_name = ""
        self._preview_of = None
        self.mpp_field = QLineEdit()
        self.mpp_field.setToolTip(MPP_TIP)
        mpp_row = QFormLayout()
        mpp_row.addRow("µm/px", self.mpp_field)
        self.cache_label = QLabel("")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setVisible(False)
        self.open_button = QPushButton("Open slide…")
        self.import_button = QPushButton("Import annotations…")
        layout = QVBoxLayout(self)
        layout.addWidget(self.info)
        layout.addWidget(self.preview)
        layout.addLayout(mpp_row)
        for widget in (self.cache_label, self.progress, self.open_button, self.import_button):
            layout.addWidget(widget)
        layout.addStretch(1)
        self.mpp_field.editingFinished.connect(self._mpp_edited)
        self.open_button.clicked.connect(self._choose_slide)
        self.import_button.clicked.connect(self._choose_annotations)
        self.viewer.layers.selection.events.active.connect(self._update)
        self.viewer.layers.events.inserted.connect(self._update)
        self.viewer.layers.events.removed.connect(self._update)
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
        slide = slide_of(layer)
        self.info.setText(describe(slide) if layer else "No slide selected")
        self._show_preview(slide)
        self.mpp_field.setEnabled(slide is not None)
        self.mpp_field.setText(mpp_text(slide))
        assumed = slide is not None and slide.scale.assumed
        self.mpp_field.setPlaceholderText(f"{slide.scale.mpp:g} assumed (the file has none)" if assumed else "")
        self._poll_cache()

    def _show_preview(self, slide):
        """Show the file's label image (else macro, else thumbnail), read once per slide."""
        if slide is self._preview_of:
            return
        self._preview_of = slide
        found = None
        if slide is not None:
            try:
                found = slide.preview_image()
            except HubmapInputError as exc:
                self.viewer.status = str(exc)
        self.preview_name = found[0] if found else ""
        self.preview.setVisible(found is not None)
        if found is None:
            self.preview.clear()
            return
        name, image = found
        height, width = image.shape[:2]
        qimage = QImage(image.tobytes(), width, height, 3 * width, QImage.Format.Format_RGB888).copy()
        pixmap = QPixmap.fromImage(qimage)
        if max(width, height) > PREVIEW_SIZE:
            pixmap = pixmap.scaled(PREVIEW_SIZE, PREVIEW_SIZE, Qt.AspectRatioMode.KeepAspectRatio,
                                   Qt.TransformationMode.SmoothTransformation)
        self.preview.setPixmap(pixmap)
        self.preview.setToolTip(f"{name} image of the slide file ({width} × {height} px)")

    def _mpp_edited(self):
        """Give the current slide the µm/px typed (blank: back to the file's or the assumption)."""
        layer = self.current_layer()
        if layer is None or self.mpp_field.text().strip() == mpp_text(slide_of(layer)):
            return
        try:
            set_layer_mpp(layer, self.mpp_field.text())
        except HubmapInputError as exc:
            self.info.setText(f"{describe(slide_of(layer))}\n{exc.problem}: µm/px unchanged")
            self.viewer.status = str(exc)
            return
        self._update()

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

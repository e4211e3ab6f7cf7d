"""Post-processing panel: threshold, minimum size, holes and watershed, live on the region in view.

Thin: every slider change (and every pan or zoom) schedules one :func:`preview_labels` call on the
probability map's region on screen, at the pyramid level napari shows, in a background thread
(latest settings win); its labels replace the live layer's data. *Apply to slide* runs
:func:`postprocess_slide` in a napari worker into the labels store beside the map, with
progress and cancel. *Find threshold* runs :func:`threshold_curve` against ground truth (a labels
layer on one of the map's levels, or an annotation file), plots Dice against the threshold and can
save the best one as the model's (or ensemble's) default.
"""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path

from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import HubmapInputError
from ..postprocess.config import MARKERS
from .forms import LabeledSlider
from .plots import ThresholdPlot
from .probability_maps import (
    MAX_VIEW_SIDE,
    curve_against,
    live_labels,
    made_here,
    map_min_size,
    map_outline,
    map_threshold,
    opened_map_layer,
    view_window,
    whole_window,
)
from .run_controls import RunControls, WorkerRun
from .viewer_layers import camera_of, probability_meta

# moved to .forms, .probability_maps and .viewer_layers; still importable from here
__all__ = ["MAX_VIEW_SIDE", "LabeledSlider", "PostprocessPanel", "camera_of", "curve_against", "live_labels",
           "probability_meta", "view_window"]

DEBOUNCE_MS = 30


class PostprocessPanel(QWidget, WorkerRun):
    """Dock widget: live post-processing of the view, apply to slide, threshold search."""

    live_ready = Signal(object)  # (token, level, window, labels, seconds) or an error, from a thread

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.live_layer = None
        self.slide_labels_layer = None
        self.result = self.error = self.curve = None
        self.last_live: dict = {}
        self._live_busy = False
        self._live_pending = False
        self._token = 0

        self.source = QComboBox()
        self.open_map_button = QPushButton("Open map…")
        self.open_map_button.setToolTip("A probability map on disk: a <slide>.prob.zarr or any OME-Zarr single-channel "
                                        "image another tool wrote (uint8, uint16 or float 0-1)")
        self.threshold = LabeledSlider(1, 99, 50, 0.01, "{:.2f}")
        self.min_size = LabeledSlider(0, 50_000, 0, 1, "{:.0f} px")
        self.fill_holes = QCheckBox("Fill holes")
        self.fill_holes.setChecked(True)
        self.watershed = QCheckBox("Split touching glomeruli (watershed)")
        self.markers = QComboBox()
        self.markers.addItems(MARKERS)
        self.min_distance = LabeledSlider(1, 100, 10, 1, "{:.0f} px")
        self.h = LabeledSlider(1, 100, 20, 0.1, "{:.1f}")
        self.compactness = LabeledSlider(0, 100, 0, 0.01, "{:.2f}")
        self.grow = LabeledSlider(0, 30, 0, 1, "{:.0f} px")
        self.grow.setToolTip("Grow each glomerulus's outline into the background by this many pixels of the map's "
                             "full resolution: for annotations that take in Bowman's capsule where the model finds the tuft")
        self.outline = LabeledSlider(1, 100, 100, 0.01, "{:.2f}")
        self.outline.setToolTip("Outline threshold: each glomerulus found at the threshold takes in the pixels connected "
                                "to it down to this probability (the threshold decides which glomeruli there are, this "
                                "where their edge lies); at or above the threshold: outlines at the threshold")
        self.live = QCheckBox("Live preview of the view")
        self.live.setChecked(True)
        self.live_status = QLabel("")
        self.controls = RunControls(self.viewer, "Apply to slide")
        self.apply_button, self.cancel_button = self.controls.run_button, self.controls.cancel_button
        self.progress, self.status = self.controls.progress, self.controls.status
        self.gt_source = QComboBox()
        self.gt_file_button = QPushButton("File…")
        self.curve_button = QPushButton("Find threshold")
        self.save_button = QPushButton("Save as model default")
        self.save_button.setEnabled(False)
        self.plot = ThresholdPlot()
        self.canvas, self.axes = self.plot.canvas, self.plot.axes

        layout = QVBoxLayout(self)
        form = QFormLayout()
        source_row = QHBoxLayout()
        source_row.addWidget(self.source, 1)
        source_row.addWidget(self.open_map_button)
        form.addRow("Probability map", source_row)
        form.addRow("Threshold", self.threshold)
        form.addRow("Minimum size", self.min_size)
        form.addRow("", self.fill_holes)
        form.addRow("", self.watershed)
        form.addRow("Markers", self.markers)
        form.addRow("Marker distance", self.min_distance)
        form.addRow("h (h-maxima)", self.h)
        form.addRow("Compactness", self.compactness)
        form.addRow("Outline threshold", self.outline)
        form.addRow("Grow outlines", self.grow)
        form.addRow("", self.live)
        layout.addLayout(form)
        layout.addWidget(self.live_status)
        layout.addWidget(self.controls)
        gt_row = QHBoxLayout()
        gt_row.addWidget(QLabel("Ground truth"))
        gt_row.addWidget(self.gt_source, 1)
        gt_row.addWidget(self.gt_file_button)
        layout.addLayout(gt_row)
        curve_row = QHBoxLayout()
        curve_row.addWidget(self.curve_button)
        curve_row.addWidget(self.save_button)
        layout.addLayout(curve_row)
        layout.addWidget(self.canvas)
        layout.addStretch(1)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.update_live)
        for control in (self.threshold, self.min_size, self.min_distance, self.h, self.compactness, self.grow, self.outline):
            control.valueChanged.connect(self.schedule_live)
        for box in (self.fill_holes, self.watershed, self.live):
            box.toggled.connect(self.schedule_live)
        self.markers.currentIndexChanged.connect(self.schedule_live)
        self.source.currentIndexChanged.connect(self._follow_source)
        self.live_ready.connect(self._on_live_ready)
        self.apply_button.clicked.connect(self.apply_to_slide)
        self.cancel_button.clicked.connect(self.cancel)
        self.gt_file_button.clicked.connect(self._choose_gt_file)
        self.open_map_button.clicked.connect(self._choose_map)
        self.curve_button.clicked.connect(self.find_threshold)
        self.save_button.clicked.connect(self.save_threshold)
        camera_of(self.viewer).events.zoom.connect(self.schedule_live)
        camera_of(self.viewer).events.center.connect(self.schedule_live)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.refresh_sources)
        self.refresh_sources()

    # --- sources --------------------------------------------------------------------------------

    def probability_layers(self) -> list:
        return [layer for layer in self.viewer.layers if probability_meta(layer) is not None]

    def _choose_map(self):
        path = QFileDialog.getExistingDirectory(self, "Probability map (an OME-Zarr folder)")
        if path:
            self.open_map(path)

    def open_map(self, path):
        """Add the probability map at ``path`` as a layer and choose it; an unreadable one is the status's error."""
        try:
            data, options = opened_map_layer(path)
        except HubmapInputError as error:
            return self._show_error(str(error))
        layer = self.viewer.add_image(data, **options)
        self.refresh_sources()
        self.source.setCurrentText(layer.name)
        return layer

    def ground_truth_layers(self) -> list:
        from napari.layers import Labels

        return [layer for layer in self.viewer.layers if isinstance(layer, Labels) and not made_here(layer)]

    def refresh_sources(self, *_):
        """Re-list probability maps (newest selected when the list grows) and ground-truth layers."""
        names = [layer.name for layer in self.probability_layers()]
        current = self.source.currentText()
        grew = len(names) > self.source.count()
        self.source.blockSignals(True)
        self.source.clear()
        self.source.addItems(names)
        if names:
            self.source.setCurrentText(names[-1] if grew or current not in names else current)
        self.source.blockSignals(False)
        gt_current = self.gt_source.currentText()
        self.gt_source.clear()
        self.gt_source.addItems([layer.name for layer in self.ground_truth_layers()])
        if self._gt_file:
            self.gt_source.addItem(self._gt_file_label())
        if gt_current:
            self.gt_source.setCurrentText(gt_current)
        self._follow_source()

    _followed = None  # the probability layer whose redraws re-run the preview

    def _follow_source(self, *_):
        """Follow the chosen map: start at its model's threshold and minimum size, and re-run the preview
        when it is redrawn (a map that inference is still filling is previewed again, not left at '0
        glomeruli')."""
        layer = self.prob_layer()
        if layer is not self._followed:
            if self._followed is not None:
                self._followed.events.set_data.disconnect(self.schedule_live)
            if layer is not None:
                layer.events.set_data.connect(self.schedule_live)
                threshold = map_threshold(layer)
                if threshold is not None:  # a newly chosen map starts at its model's threshold
                    self.threshold.setValue(threshold)
                self.min_size.setValue(map_min_size(layer))  # and its smallest glomerulus (0: none recorded)
                outline = map_outline(layer)  # and its outline threshold (none recorded: 1, no spread)
                self.outline.setValue(1.0 if outline is None else outline)
            self._followed = layer
        self.schedule_live()

    _gt_file: str | None = None

    def _gt_file_label(self) -> str:
        return f"file: {Path(self._gt_file).name}"

    def prob_layer(self):
        name = self.source.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def config(self):
        from ..postprocess import PostprocessConfig

        return PostprocessConfig(
            threshold=round(self.threshold.value(), 2), min_size=int(self.min_size.value()),
            fill_holes=self.fill_holes.isChecked(), watershed=self.watershed.isChecked(),
            markers=self.markers.currentText(), min_distance=int(self.min_distance.value()),
            h=round(self.h.value(), 3), compactness=round(self.compactness.value(), 3), grow=int(self.grow.value()),
            outline_threshold=round(self.outline.value(), 2) if self.outline.value() < 1 else None,
        )

    # --- live preview ---------------------------------------------------------------------------

    def schedule_live(self, *_):
        if self.live.isChecked() and self.prob_layer() is not None:
            self._timer.start()

    @property
    def live_settling(self) -> bool:
        """Whether a live preview is due, running or pending, or none has been shown yet for a map."""
        if not self.live.isChecked() or self.prob_layer() is None:
            return False
        return self._timer.isActive() or self._live_busy or self._live_pending or not self.last_live

    def update_live(self):
        """Start one preview of the view in a thread (or mark one pending if one is running)."""
        layer = self.prob_layer()
        if layer is None or not self.live.isChecked():
            return
        if self._live_busy:
            self._live_pending = True
            return
        try:
            config = self.config()
            level, window = view_window(layer)
        except HubmapInputError as error:
            self.live_status.setText(str(error))
            return
        levels = layer.data if layer.multiscale else [layer.data]
        self._live_busy, self._live_pending = True, False
        self._token += 1
        token = self._token

        def work():
            started = time.perf_counter()
            try:
                labels = live_labels(levels, level, window, config)
                outcome = (token, layer, level, window, labels, time.perf_counter() - started)
            except Exception as error:  # shown in the panel
                outcome = error
            try:
                self.live_ready.emit(outcome)
            except RuntimeError:  # the panel was deleted meanwhile
                pass

        threading.Thread(target=work, name="napari-hubmap-live", daemon=True).start()

    def _on_live_ready(self, outcome):
        self._live_busy = False
        if isinstance(outcome, Exception):
            self.live_status.setText(f"Preview failed: {outcome}")
        else:
            self._show_live(*outcome)
        if self._live_pending:
            self.update_live()

    def _show_live(self, token, layer, level, window, labels, seconds):
        y0, _, x0, _ = window
        factor = 2**level
        scale = tuple(float(s) * factor for s in layer.scale[-2:])
        translate = tuple(float(t) + (o * factor + (factor - 1) / 2) * float(s)
                          for t, o, s in zip(layer.translate[-2:], (y0, x0), layer.scale[-2:]))
        meta = probability_meta(layer)
        metadata = {"napari_hubmap": {"live": True, "level": level, "window": list(window),
                                      "downscale": float(meta.get("downscale", 1.0)) * factor}}
        if self.live_layer is None or self.live_layer not in self.viewer.layers:
            self.live_layer = self.viewer.add_labels(labels, name="glomeruli (live)", scale=scale, translate=translate,
                                                     opacity=0.6, metadata=metadata)
        else:
            self.live_layer.data = labels
            self.live_layer.scale, self.live_layer.translate = scale, translate
            self.live_layer.metadata = metadata
        count = int(labels.max())
        self.last_live = {"token": token, "level": level, "window": window, "objects": count, "seconds": seconds}
        where = "in the map" if window == whole_window(layer, level) else "in view"
        self.live_status.setText(f"{count} glomeruli {where} · level {level} · {seconds * 1000:.0f} ms")

    # --- apply to slide -------------------------------------------------------------------------

    def apply_to_slide(self):
        """Post-process the whole map into the labels store beside it (named by
        :func:`~napari_hubmap.stores.naming.labels_beside`) in a worker; returns the worker."""
        if self.running:
            return self.worker
        layer = self.prob_layer()
        if layer is None:
            return self._refuse("Run inference first: no probability map in the viewer")
        from ..postprocess import postprocess_slide
        from ..stores.naming import labels_beside

        prob_path = Path(probability_meta(layer)["probability"])
        out = labels_beside(prob_path)
        config = self.config()
        self.result = self.error = None
        self._applied = {"layer": layer, "out": out}
        return self.controls.start_worker(
            lambda progress, cancel: postprocess_slide(prob_path, out, config, progress=progress, cancel=cancel),
            f"Post-processing the slide… → {out}",
            on_returned=self._on_returned, on_cancelled=self._on_cancelled, on_failed=self._on_failed,
        )

    def cancel(self):
        self.controls.cancel("Cancelling…")

    def _on_returned(self, result):
        from ..stores.labels import open_labels

        self.result = result
        levels, _ = open_labels(result.out)
        source = self._applied["layer"]
        name = f"{source.name.removesuffix(' probability')} glomeruli"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        meta = {"napari_hubmap": {"labels": str(result.out), "downscale": float(result.downscale),
                                  "slide_shape": list(result.slide_shape) if result.slide_shape else None}}
        self.slide_labels_layer = self.viewer.add_labels(
            list(levels) if len(levels) > 1 else levels[0], name=name, multiscale=len(levels) > 1,
            scale=tuple(source.scale[-2:]), translate=tuple(source.translate[-2:]), opacity=0.6, metadata=meta,
        )
        if self.live_layer is not None and self.live_layer in self.viewer.layers:
            self.live_layer.visible = False
        self.controls.set_bar(1, 1)
        self.controls.announce(f"Done: {result.objects} glomeruli in {result.seconds:.1f} s "
                               f"({result.megapixels_per_s:.0f} Mpx/s) → {result.out}")

    def _on_cancelled(self, error):
        self.error = error
        self.controls.reset_bar()
        self.status.setText("Cancelled; nothing was written")

    def _on_failed(self, error):
        self.error = error
        self._show_error(f"Post-processing failed: {error}")

    # --- threshold search -----------------------------------------------------------------------

    def _choose_gt_file(self):
        path, _ = QFileDialog.getOpenFileName(self, "Ground truth (GeoJSON, RLE CSV, mask)")
        if path:
            self.set_gt_file(path)

    def set_gt_file(self, path) -> None:
        self._gt_file = str(path)
        self.refresh_sources()
        self.gt_source.setCurrentText(self._gt_file_label())

    def find_threshold(self):
        """Dice against ground truth for every threshold (one pass, in a worker), plotted; the best
        becomes the threshold. Returns the worker (None if there is nothing to compare)."""
        layer = self.prob_layer()
        if layer is None:
            return self._refuse("Run inference first: no probability map in the viewer")
        choice = self.gt_source.currentText()
        if not choice:
            return self._refuse("Choose ground truth: a labels layer or a file")
        from napari.qt.threading import create_worker

        gt_layer = None if choice.startswith("file: ") else self.viewer.layers[choice]
        levels = layer.data if layer.multiscale else [layer.data]
        prob_path = probability_meta(layer)["probability"]
        self.curve = None
        self.curve_button.setEnabled(False)
        self.status.setText("Computing Dice for every threshold…")
        worker = create_worker(
            curve_against, prob_path, levels, gt_layer, None if gt_layer else self._gt_file, _start_thread=False,
            _connect={"returned": self._on_curve, "errored": self._on_curve_error,
                      "finished": lambda: self.curve_button.setEnabled(True)},
        )
        self.curve_worker = worker
        worker.start()
        return worker

    def _on_curve(self, curve):
        self.curve = curve
        self.plot.plot(curve)
        self.threshold.setValue(curve.best_threshold)
        self.save_button.setEnabled(True)
        self.status.setText(f"Best threshold {curve.best_threshold:.2f}: Dice {curve.best_dice:.3f}")

    def _on_curve_error(self, error):
        if not isinstance(error, HubmapInputError):
            traceback.print_exception(type(error), error, error.__traceback__)
        self._show_error(f"Threshold search failed: {error}")

    def save_threshold(self):
        from ..postprocess.threshold import save_best_threshold

        layer = self.prob_layer()
        if layer is None or self.curve is None:
            return None
        try:
            path = save_best_threshold(Path(probability_meta(layer)["probability"]), float(self.curve.best_threshold))
        except HubmapInputError as error:
            self._show_error(f"Saving the threshold failed: {error}")
            return None
        self.status.setText(f"Saved threshold {self.curve.best_threshold:.2f} → {path}")
        return path

    # --- messages -------------------------------------------------------------------------------

    def _refuse(self, message: str):
        self.controls.refuse(message)
        return None

    def _show_error(self, message: str):
        self.controls.fail(message)

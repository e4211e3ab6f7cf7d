"""Review panel: open a curation project, walk its review queue, paint edits that autosave.

Thin: *Open* calls :func:`open_project`, then for the chosen slide :func:`open_edits` (the edits
store, kept durable by an :class:`Autosaver`: at most 2 s after an edit, and on close) and
:func:`project_layers` (slide, prediction, ground truth, pseudo-labels, edits, review grid); the
queue is :func:`review_queue` (tiles ranked by ground-truth/prediction disagreement and
uncertainty). Next / Previous move the camera to a tile; Accept, Drop and Corrected call
:func:`set_state` and move on. napari writes every paint, fill, erase, undo and redo into the edits
layer's data, which *is* the store, so the store mirrors the layer with nothing else to hook.
Keys (napari key bindings of the viewer, so they work with the canvas focused, as napari's own
do): Alt+Right / Alt+Left next / previous, Alt+A accept, Alt+D drop, Alt+C corrected. They are bound
through the viewer's public ``bind_key`` (the panel is handed a public-only proxy of the viewer when
opened from the Plugins menu) and unbound when the panel goes. A slide whose edits another viewer or
process is writing (see :mod:`napari_hubmap.locks`) is not shown: the status line and a notification name
that process, and the panel stays usable.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import HubmapInputError
from ..reader import slide_of
from .peers import HoldsProject
from .viewer_layers import camera_of, last_slide, probability_meta

AUTOSAVE_WINDOW_S = 2.0
WHOLE_EDITS_MAX_PIXELS = 64 * 2**20
"""Above this (working-scale pixels) the edits layer shows the current tile and one tile around it
(napari reads a single-scale labels layer's whole plane), moving with the queue."""
SHORTCUTS = {"next": "Alt-Right", "previous": "Alt-Left", "accepted": "Alt-A", "dropped": "Alt-D", "corrected": "Alt-C"}
"""Review actions and their napari key bindings (napari's ``Modifier-Key`` spelling)."""


def describe_entry(entry) -> str:
    dice = "—" if entry.dice is None else f"{entry.dice:.2f}"
    return f"{entry.tile:>7} · Dice {dice} · uncertainty {entry.uncertainty:.2f} · {entry.state}"


def tile_centre_world(entry, downscale: float) -> tuple[float, float]:
    """Centre of a working-scale tile in slide (world) pixels, as the layers are placed."""
    d = float(downscale)
    return tuple((lo + hi - 1) / 2 * d + (d - 1) / 2 for lo, hi in ((entry.y0, entry.y1), (entry.x0, entry.x1)))


def bind_review_keys(viewer, actions: dict) -> dict:
    """Bind :data:`SHORTCUTS` on ``viewer`` (napari's public key-binding API) to ``actions``; returns
    {key: bound function} for :func:`unbind_keys`. A binding outliving its panel does nothing."""
    bindings = {}
    for name, key in SHORTCUTS.items():
        def pressed(_viewer, action=actions[name]):
            try:
                action()
            except RuntimeError:  # the panel's Qt side is already deleted
                pass

        viewer.bind_key(key, pressed, overwrite=True)
        bindings[key] = pressed
    return bindings


def unbind_keys(viewer, bindings: dict) -> None:
    """Remove the bindings that :func:`bind_review_keys` made, where they are still ours."""
    try:
        keymap = viewer.keymap
        for key, function in bindings.items():
            if any(bound == function for bound in keymap.values()):
                viewer.bind_key(key, None)
    except (RuntimeError, AttributeError, KeyError):  # the viewer is closed
        pass


@contextmanager
def _widget_gone():
    """Ignore PyQt's error for a C++ widget already deleted (a late signal after the dock was closed)."""
    try:
        yield
    except RuntimeError as error:
        if "has been deleted" not in str(error):
            raise


class ReviewPanel(QWidget, HoldsProject):
    """Dock widget: project folder, slide, ranked tiles, navigation and review buttons, save state."""

    saved = Signal(int)  # durable edit sequence, from the autosave thread
    save_failed = Signal(object)

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.project = None
        self.slide_id: str | None = None
        self.store = self.saver = None
        self.queue: list = []
        self.index = -1
        self.windowed = False
        self.layers: dict = {}

        self.folder = QLineEdit()
        self.folder.setPlaceholderText("project folder (napari-hubmap project init)")
        self.browse_button = QToolButton()
        self.browse_button.setText("…")
        self.open_button = QPushButton("Open")
        self.new_button = QPushButton("New from the open slide")
        self.slide = QComboBox()
        self.tiles = QListWidget()
        self.tiles.setMinimumHeight(140)
        self.previous_button = QPushButton("◀ Previous")
        self.next_button = QPushButton("Next ▶")
        self.accept_button = QPushButton("Accept pseudo-label")
        self.drop_button = QPushButton("Drop ground truth (noisy)")
        self.corrected_button = QPushButton("Mark corrected")
        self.counts = QLabel("")
        self.save_status = QLabel("")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(self.browse_button)
        row.addWidget(self.open_button)
        layout.addLayout(row)
        layout.addWidget(self.new_button)
        layout.addWidget(self.slide)
        layout.addWidget(QLabel("Tiles, most suspicious first"))
        layout.addWidget(self.tiles)
        nav = QHBoxLayout()
        nav.addWidget(self.previous_button)
        nav.addWidget(self.next_button)
        layout.addLayout(nav)
        for button in (self.accept_button, self.drop_button, self.corrected_button):
            layout.addWidget(button)
        layout.addWidget(self.counts)
        layout.addWidget(self.save_status)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.browse_button.clicked.connect(self._choose_folder)
        self.open_button.clicked.connect(lambda: self.open(self.folder.text()))
        self.new_button.clicked.connect(lambda: self.create(self.folder.text()))
        self.slide.currentTextChanged.connect(self._slide_chosen)
        self.tiles.currentRowChanged.connect(self._row_chosen)
        self.previous_button.clicked.connect(self.previous)
        self.next_button.clicked.connect(self.next)
        self.accept_button.clicked.connect(lambda: self.mark("accepted"))
        self.drop_button.clicked.connect(lambda: self.mark("dropped"))
        self.corrected_button.clicked.connect(lambda: self.mark("corrected"))
        self.saved.connect(self._show_saved)
        self.save_failed.connect(self._show_save_failed)
        self.actions = {"next": self.next, "previous": self.previous, "accepted": lambda: self.mark("accepted"),
                        "dropped": lambda: self.mark("dropped"), "corrected": lambda: self.mark("corrected")}
        self.key_bindings = bind_review_keys(self.viewer, self.actions)
        self.destroyed.connect(lambda *_, bindings=self.key_bindings, viewer=self.viewer: unbind_keys(viewer, bindings))
        self.viewer.layers.events.removed.connect(self._layer_removed)

    # --- project and slide ----------------------------------------------------------------------

    def _choose_folder(self):
        folder = QFileDialog.getExistingDirectory(self, "Project folder", self.folder.text() or "")
        if folder:
            self.open(folder)

    def open(self, folder) -> bool:
        """Open the project in ``folder`` and its first slide; False (and a message) on bad input."""
        from ..project import open_project

        try:
            project = open_project(Path(str(folder)).expanduser())
        except HubmapInputError as error:
            self._show_error(f"Cannot open the project: {error}")
            return False
        self.close_project()
        self.project = project
        self.folder.setText(str(project.root))
        self.slide.blockSignals(True)
        self.slide.clear()
        self.slide.addItems([s.id for s in project.slides])
        self.slide.blockSignals(False)
        if project.slides:
            self.show_slide(project.slides[0].id)
        else:
            self.status.setText("The project has no slides yet (napari-hubmap project add-slide)")
        return True

    def create(self, folder, *, tile: int = 512, downscale: float | None = None) -> bool:
        """``napari-hubmap project init`` from the GUI: a project in ``folder`` holding the viewer's
        slide (the one opened with napari-hubmap) and its probability maps, then opened. The working
        scale is ``downscale``, else the maps', else the default."""
        from ..project.create import NewSlide, create_project

        slide = last_slide(self.viewer)
        if not str(folder).strip():
            self._show_error("Type a folder for the new project first")
            return False
        if slide is None:
            self._show_error("Open a slide with napari-hubmap first: the new project starts with it")
            return False
        maps = [probability_meta(layer)["probability"] for layer in self.viewer.layers if probability_meta(layer)]
        try:
            project = create_project(Path(str(folder)).expanduser(), [NewSlide(slide.path, predictions=tuple(maps))],
                                     tile=tile, downscale=downscale, mpp=slide.mpp_given)
        except HubmapInputError as error:
            self._show_error(f"Cannot make the project: {error}")
            return False
        for layer in [shown for shown in self.viewer.layers if slide_of(shown) is slide or probability_meta(shown)]:
            self.viewer.layers.remove(layer)  # the project's own layers replace them
        return self.open(project.root)

    def project_root(self) -> str | None:
        """The open project's folder (the Training panel's data folder defaults to it), or None."""
        return str(self.project.root) if self.project is not None else None

    def _slide_chosen(self, slide_id: str):
        if slide_id and self.project is not None and slide_id != self.slide_id:
            self.show_slide(slide_id)

    def show_slide(self, slide_id: str) -> None:
        """Layers of one slide (edits autosaved), its queue, the first tile."""
        import napari

        from ..project import Autosaver, open_edits, project_layers, review_queue

        self._close_slide()
        self._remove_layers()  # the previous slide's: its edits layer no longer writes to an open store
        project = self.project
        self.slide_id = slide_id
        self.slide.blockSignals(True)
        self.slide.setCurrentText(slide_id)  # when called from code, the chooser follows
        self.slide.blockSignals(False)
        try:
            self.store = open_edits(project, slide_id)
        except HubmapInputError as error:  # e.g. edited in another viewer: its lock names it
            self._no_slide(f"Cannot edit slide {slide_id}: {error}")
            return
        self.saver = Autosaver(self.store, AUTOSAVE_WINDOW_S, on_saved=self.saved.emit, on_error=self.save_failed.emit)
        self.layers = {}
        self.windowed = self.store.size > WHOLE_EDITS_MAX_PIXELS
        for data, kwargs, kind in project_layers(project, slide_id, edits=self.store):
            if kind == "labels" and kwargs["metadata"]["napari_hubmap"]["role"] == "edits" and self.windowed:
                data = self.store.window(0, project.tile_size, 0, project.tile_size)
            layer = self.viewer.add_layer(napari.layers.Layer.create(data, kwargs, kind))
            self.layers[kwargs["metadata"]["napari_hubmap"]["role"]] = layer
        self.viewer.layers.selection.active = self.layers["edits"]
        try:
            self.queue = review_queue(project, slide_id, include_reviewed=True)
        except HubmapInputError as error:  # e.g. no prediction yet: the layers are there, no queue
            self.queue = []
            self.status.setText(f"No review queue: {error}")
        self.tiles.blockSignals(True)
        self.tiles.clear()
        self.tiles.addItems([describe_entry(e) for e in self.queue])
        self.tiles.blockSignals(False)
        self.save_status.setText("Edits are saved within 2 s")
        self._show_counts()
        self.index = -1
        if self.queue:
            self.go_to(0)
        elif not self.status.text().startswith("No review queue"):
            self.status.setText("No tiles to review")

    # --- navigation and review ------------------------------------------------------------------

    def _no_slide(self, message: str) -> None:
        """No slide is shown (its edits cannot be opened): an empty queue, and the message."""
        self.queue, self.index = [], -1
        self.tiles.blockSignals(True)
        self.tiles.clear()
        self.tiles.blockSignals(False)
        self.counts.setText("")
        self._show_error(message)

    def go_to(self, index: int) -> None:
        if not self.queue:
            return
        self.index = max(0, min(index, len(self.queue) - 1))
        entry = self.queue[self.index]
        if self.windowed:
            self._show_edits_around(entry)
        camera = camera_of(self.viewer)
        camera.center = tile_centre_world(entry, self.project.downscale)
        side = max(entry.y1 - entry.y0, entry.x1 - entry.x0) * float(self.project.downscale)
        camera.zoom = 600 / (1.3 * side)
        self.tiles.blockSignals(True)
        self.tiles.setCurrentRow(self.index)
        self.tiles.blockSignals(False)
        self.status.setText(f"Tile {entry.tile} ({self.index + 1}/{len(self.queue)}): {describe_entry(entry)}")

    def _show_edits_around(self, entry) -> None:
        """Large slide: the edits layer becomes the store's window around ``entry`` (one tile margin)."""
        margin = self.project.tile_size
        window = self.store.window(entry.y0 - margin, entry.y1 + margin, entry.x0 - margin, entry.x1 + margin)
        layer = self.layers["edits"]
        d = float(self.project.downscale)
        layer.data = window
        layer.translate = tuple(o * d + (d - 1) / 2 for o in window.origin)

    def _row_chosen(self, row: int):
        if row >= 0:
            self.go_to(row)

    def current(self):
        return self.queue[self.index] if 0 <= self.index < len(self.queue) else None

    def next(self):
        self.go_to(self.index + 1)

    def previous(self):
        self.go_to(self.index - 1)

    def mark(self, state: str) -> None:
        """Set the current tile's state, persist it, move to the next tile."""
        from ..project import set_state

        entry = self.current()
        if entry is None:
            return
        try:
            if state == "corrected":
                self.store.flush()  # the corrections this state vouches for are on disk first
            set_state(self.project, self.slide_id, entry.tile, state)
        except (HubmapInputError, OSError) as error:  # a full or failing disk: the edits stay in memory
            self._show_error(f"Cannot mark {entry.tile} {state}: {error}")
            return
        entry.state = state
        self.tiles.item(self.index).setText(describe_entry(entry))
        self._refresh_review_layer()
        self._show_counts()
        if self.index + 1 < len(self.queue):
            self.next()

    def _refresh_review_layer(self):
        from ..project.layers import STATE_COLOURS, review_rectangles

        layer = self.layers.get("review")
        if layer is None:
            return
        rects, states = review_rectangles(self.project, self.slide_id)
        layer.data = rects
        if states:
            layer.edge_color = [STATE_COLOURS[s] for s in states]

    def _show_counts(self):
        counts = self.project.review.counts(self.slide_id)
        self.counts.setText(" · ".join(f"{state} {n}" for state, n in counts.items()))

    # --- closing --------------------------------------------------------------------------------

    def _layer_removed(self, event):
        if self.layers.get("edits") is event.value:
            self._close_slide()

    def _close_slide(self):
        """Save and close the edits of the current slide (nothing is lost: flushed, then closed)."""
        if self.saver is not None:
            self.saver.close()
        if self.store is not None:
            self.store.close()
        self.saver = self.store = None

    def _remove_layers(self):
        for layer in list(self.layers.values()):
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.layers = {}

    def close_project(self, *_):
        self._close_slide()
        self._remove_layers()
        self.project = self.slide_id = None

    def _show_saved(self, sequence: int) -> None:
        """The autosave thread's report, queued to the GUI: it may come after the dock was closed (the
        closing flush of the edits), when the label is already deleted; then there is nothing to show."""
        with _widget_gone():
            self.save_status.setText(f"All edits saved (#{sequence})")

    def _show_save_failed(self, error) -> None:
        self._show_error(f"Autosave failed: {error}")

    def _show_error(self, message: str):
        """In the panel's status line (unless the dock is already gone) and as a napari notification."""
        with _widget_gone():
            self.status.setText(message)
        from napari.utils.notifications import show_error

        show_error(message)

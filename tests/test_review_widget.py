"""The Review panel in a real viewer (Xvfb + Mesa): open a project, walk the queue, review, autosave edits."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_hubmap.project import add_slide, init_project, open_edits, open_project
from napari_gui import click, press_key
from test_project_manifest import make_inputs

pytestmark = pytest.mark.gui


@pytest.fixture
def project_root(tmp_path):
    inputs = make_inputs(tmp_path / "inputs")
    project = init_project(tmp_path / "project", tile=128, downscale=1)
    add_slide(project, inputs["slide"], ground_truth=inputs["gt"], predictions=[inputs["prob"]])
    return tmp_path / "project"


def open_panel(make_napari_viewer, root):
    from napari_hubmap._widgets.review_panel import ReviewPanel

    viewer = make_napari_viewer(show=True)
    panel = ReviewPanel(viewer)
    viewer.window.add_dock_widget(panel, name="Review")
    assert panel.open(root)
    return viewer, panel


def test_open_restores_layers_and_the_camera_walks_the_queue(make_napari_viewer, qtbot, project_root):
    from napari_hubmap._widgets.postprocess_panel import camera_of
    from napari_hubmap._widgets.review_panel import tile_centre_world

    viewer, panel = open_panel(make_napari_viewer, project_root)
    names = [layer.name for layer in viewer.layers]
    assert names == ["kidney", "kidney prediction", "kidney ground truth", "kidney pseudo-labels", "kidney edits", "kidney review"]
    assert panel.tiles.count() == len(panel.queue) > 3 and panel.index == 0
    scores = [e.score for e in panel.queue]
    assert scores == sorted(scores, reverse=True)  # most suspicious first
    camera = camera_of(viewer)
    first = tuple(camera.center[-2:])
    assert first == pytest.approx(tile_centre_world(panel.queue[0], 1))
    click(qtbot, panel.next_button)
    assert panel.index == 1 and panel.tiles.currentRow() == 1
    assert tuple(camera.center[-2:]) == pytest.approx(tile_centre_world(panel.queue[1], 1)) != first
    click(qtbot, panel.previous_button)
    assert panel.index == 0 and tuple(camera.center[-2:]) == pytest.approx(first)


def test_accept_and_drop_persist_move_on_and_count(make_napari_viewer, qtbot, project_root):
    viewer, panel = open_panel(make_napari_viewer, project_root)
    first, second = panel.queue[0].tile, panel.queue[1].tile
    third = panel.queue[2].tile
    click(qtbot, panel.drop_button)
    assert panel.index == 1 and "dropped 1" in panel.counts.text()
    press_key(viewer, "A", alt=True)  # Alt+A
    assert panel.index == 2 and "accepted 1" in panel.counts.text()
    click(qtbot, panel.accept_button)
    assert panel.index == 3 and "accepted 2" in panel.counts.text()
    assert len(panel.layers["review"].data) == 3
    reopened = open_project(project_root)
    assert reopened.review.state("kidney", first) == "dropped" and reopened.review.state("kidney", second) == "accepted"
    assert reopened.review.state("kidney", third) == "accepted"


def test_painting_is_autosaved_within_two_seconds_and_kept_on_close(make_napari_viewer, qtbot, project_root):
    viewer, panel = open_panel(make_napari_viewer, project_root)
    edits = panel.layers["edits"]
    edits.selected_label = 7
    edits.brush_size = 9
    before = np.asarray(edits.data[140:160, 20:40]).copy()
    edits.paint((150, 30), 7)
    painted_at = time.monotonic()
    assert (np.asarray(edits.data[148:153, 28:33]) == 7).all() and not (before == 7).all()  # a disc brush
    qtbot.waitUntil(lambda: panel.save_status.text().startswith("All edits saved"), timeout=5_000)
    assert time.monotonic() - painted_at < 2.5
    edits.paint((60, 200), 7)
    edits.undo()  # napari's undo goes through the layer's data, so into the store
    assert (np.asarray(edits.data[58:63, 198:203]) != 7).all()
    edits.redo()
    edits.undo()
    edits.paint((20, 300), 7)  # unsaved when the slide is closed: close flushes it
    panel.close_project()
    store = open_edits(open_project(project_root), "kidney", read_only=True)
    assert store.read(150, 151, 30, 31)[0, 0] == 7 and store.read(20, 21, 300, 301)[0, 0] == 7
    assert store.read(60, 61, 200, 201)[0, 0] != 7  # the undone stroke is not there
    store.close()


def test_a_bad_project_folder_is_one_clear_message(make_napari_viewer, qtbot, tmp_path):
    from napari_hubmap._widgets.review_panel import ReviewPanel

    viewer = make_napari_viewer()
    panel = ReviewPanel(viewer)
    assert not panel.open(tmp_path / "nowhere")
    assert panel.status.text().startswith("Cannot open the project:") and len(viewer.layers) == 0


def test_a_large_slide_edits_the_window_around_the_tile(make_napari_viewer, qtbot, project_root, monkeypatch):
    from napari_hubmap._widgets import review_panel

    monkeypatch.setattr(review_panel, "WHOLE_EDITS_MAX_PIXELS", 100)
    viewer, panel = open_panel(make_napari_viewer, project_root)
    edits = panel.layers["edits"]
    assert panel.windowed
    for index in (0, 5):
        panel.go_to(index)
        entry = panel.queue[index]
        oy, ox = edits.data.origin
        assert (oy, ox) == (max(0, entry.y0 - 128), max(0, entry.x0 - 128)) and tuple(edits.translate[-2:]) == (oy, ox)
    edits.paint((entry.y0 - oy + 10, entry.x0 - ox + 10), 9)  # layer coordinates inside the window
    panel.close_project()
    store = open_edits(open_project(project_root), "kidney", read_only=True)
    assert store.read(entry.y0 + 10, entry.y0 + 11, entry.x0 + 10, entry.x0 + 11)[0, 0] == 9
    store.close()


def test_new_project_from_the_open_slide(make_napari_viewer, qtbot, tmp_path):
    from napari_hubmap._widgets.review_panel import ReviewPanel

    inputs = make_inputs(tmp_path / "inputs")
    viewer = make_napari_viewer(show=True)
    viewer.open(str(inputs["slide"]), plugin="napari-hubmap")
    panel = ReviewPanel(viewer)
    assert not panel.create("") and "folder" in panel.status.text()
    assert panel.create(tmp_path / "new")
    project = open_project(tmp_path / "new")
    assert [s.id for s in project.slides] == ["kidney"] and panel.slide_id == "kidney"
    assert [layer.name for layer in viewer.layers].count("kidney") == 1 and "kidney edits" in viewer.layers
    assert panel.queue == [] and "no prediction" in panel.status.text()  # the slide had no map yet
    assert not panel.create(tmp_path / "new") and "already a project" in panel.status.text()


def test_switching_slides_replaces_the_previous_slides_layers(make_napari_viewer, qtbot, tmp_path):
    first, second = make_inputs(tmp_path / "a"), make_inputs(tmp_path / "b")
    project = init_project(tmp_path / "project", tile=128, downscale=1)
    add_slide(project, first["slide"], slide_id="first", ground_truth=first["gt"], predictions=[first["prob"]])
    add_slide(project, second["slide"], slide_id="second", ground_truth=second["gt"], predictions=[second["prob"]])
    viewer, panel = open_panel(make_napari_viewer, tmp_path / "project")
    assert panel.slide_id == "first" and all(layer.name.startswith("first") for layer in viewer.layers)
    old_edits = panel.layers["edits"]
    panel.slide.setCurrentText("second")
    assert panel.slide_id == "second" and old_edits not in viewer.layers
    assert [layer.name.split()[0] for layer in viewer.layers] == ["second"] * 6
    panel.show_slide("first")  # from code (a script, the queue of another panel): the chooser follows
    assert panel.slide.currentText() == "first" and panel.slide_id == "first"


def test_marking_corrected_on_a_full_disk_is_a_message_and_keeps_the_edits(make_napari_viewer, qtbot, project_root,
                                                                            monkeypatch):
    """Corrected flushes the edits first; on a full disk that is one message in the panel, the tile keeps its
    state and the queue its place, the edits stay in memory, and the same click succeeds once space is back."""
    import errno

    from napari_hubmap.errors import HubmapWriteError

    viewer, panel = open_panel(make_napari_viewer, project_root)
    tile = panel.queue[0].tile
    panel.store.apply(0, 0, np.full((8, 8), 7, np.uint32))
    real_flush = panel.store.flush

    def full_disk():
        raise HubmapWriteError(panel.store.path, "cannot write: No space left on device", errno.ENOSPC)

    monkeypatch.setattr(panel.store, "flush", full_disk)
    click(qtbot, panel.corrected_button)
    assert "No space left on device" in panel.status.text() and panel.index == 0
    assert open_project(project_root).review.state("kidney", tile) != "corrected"
    assert panel.store.unsaved and panel.store.read(0, 8, 0, 8).min() == 7
    monkeypatch.setattr(panel.store, "flush", real_flush)
    click(qtbot, panel.corrected_button)
    assert panel.index == 1 and open_project(project_root).review.state("kidney", tile) == "corrected"
    assert not panel.store.unsaved


def test_an_autosave_report_after_the_labels_are_deleted_is_dropped_quietly(make_napari_viewer, qtbot, project_root,
                                                                           monkeypatch):
    """The autosave thread's last report is queued to the GUI and can land after the dock's widgets were
    deleted (seen once under load as 'wrapped C/C++ object of type QLabel has been deleted' in the Qt event
    loop at teardown); a save report is dropped, a failure still reaches napari's notifications, and any other
    error still surfaces."""
    import napari.utils.notifications as notifications
    from qtpy import sip

    from napari_hubmap._widgets import review_panel

    viewer, panel = open_panel(make_napari_viewer, project_root)
    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    sip.delete(panel.save_status)
    sip.delete(panel.status)
    panel.saved.emit(3)  # same thread: delivered at once, to the deleted labels
    panel.save_failed.emit(OSError("disk gone"))
    assert shown == ["Autosave failed: disk gone"]
    with pytest.raises(RuntimeError, match="other"), review_panel._widget_gone():
        raise RuntimeError("some other failure")


def canvas_point(viewer, y: float, x: float):
    """The canvas widget's pixel (a QPoint) that shows world position (y, x) in the 2D view."""
    from qtpy.QtCore import QPoint

    canvas = viewer.window._qt_viewer.canvas  # the test (not the plugin) may reach the canvas
    to_canvas = canvas.view.transform * canvas.view.scene.transform  # world (x, y) -> canvas pixels
    cx, cy = to_canvas.map([x, y])[:2]
    return QPoint(round(cx), round(cy))


def drag_on_canvas(viewer, qtbot, points) -> None:
    """Press the left mouse button at the first world point, move through the others, release at the last."""
    from qtpy.QtCore import Qt

    native = viewer.window._qt_viewer.canvas.native
    left, none = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    qtbot.mousePress(native, left, none, canvas_point(viewer, *points[0]))
    for point in points[1:]:
        qtbot.mouseMove(native, canvas_point(viewer, *point))
        qtbot.wait(20)  # napari takes mouse moves at most every 5 ms (a hand is slower)
    qtbot.mouseRelease(native, left, none, canvas_point(viewer, *points[-1]))


def test_a_brush_stroke_with_the_mouse_reaches_the_store_and_ctrl_z_takes_it_back(make_napari_viewer, qtbot,
                                                                                  project_root):
    from napari.layers.labels._labels_constants import Mode

    viewer, panel = open_panel(make_napari_viewer, project_root)
    edits = panel.layers["edits"]
    viewer.scene.camera.center, viewer.scene.camera.zoom = (150, 150), 2.0  # 2 screen pixels a slide pixel
    edits.mode, edits.selected_label, edits.brush_size = Mode.PAINT, 5, 5
    assert not (np.asarray(edits.data[140:161, 100:201]) == 5).any()
    drag_on_canvas(viewer, qtbot, [(150, 110 + 10 * step) for step in range(9)])  # a stroke along row 150
    painted = np.asarray(edits.data[:]) == 5
    rows, columns = np.nonzero(painted)
    assert set(rows) == set(range(148, 153)) and columns.min() == 108 and columns.max() == 192  # the brush's width
    assert painted[150, 108:193].all()  # no gap between the mouse moves
    stroke_saved = f"All edits saved (#{panel.store.sequence})"  # the autosave that holds the whole stroke
    qtbot.waitUntil(lambda: panel.save_status.text() == stroke_saved, timeout=5_000)
    store = open_edits(open_project(project_root), "kidney", read_only=True)
    assert np.array_equal(store.read(140, 161, 100, 201) == 5, painted[140:161, 100:201])  # autosaved to disk
    store.close()

    press_key(viewer, "Z", control=True)  # the whole stroke is one undo step
    assert not (np.asarray(edits.data[:]) == 5).any()
    panel.close_project()
    store = open_edits(open_project(project_root), "kidney", read_only=True)
    assert not (store.read(140, 161, 100, 201) == 5).any()
    store.close()

"""Helpers for GUI tests: real key presses on napari's canvas, as a user makes them."""

from __future__ import annotations


def press_key(viewer, key: str, *, alt: bool = False, control: bool = False, shift: bool = False) -> None:
    """Press and release ``key`` ("Right", "A", ...) on the viewer's canvas with the given modifiers,
    through Qt's event queue, so napari's key-binding dispatch handles it as a real key press."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    modifiers = Qt.KeyboardModifier.NoModifier
    for wanted, flag in ((alt, Qt.KeyboardModifier.AltModifier), (control, Qt.KeyboardModifier.ControlModifier),
                         (shift, Qt.KeyboardModifier.ShiftModifier)):
        if wanted:
            modifiers |= flag
    canvas = viewer.window._qt_viewer.canvas.native  # the test (not the plugin) may reach the canvas
    canvas.setFocus()
    QApplication.processEvents()
    QTest.keyClick(canvas, getattr(Qt.Key, f"Key_{key}"), modifiers)
    QApplication.processEvents()

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


def click(qtbot, button) -> None:
    """Press ``button`` with the left mouse button, as a user does. The button must be on screen (its
    dock in a shown window) and enabled: a hidden or greyed-out button fails here, where a call to the
    slot or ``button.click()`` would have run the action anyway (or lost the click without a word)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()  # a dock added to a shown window is shown by the event loop
    assert button.isVisible(), f"the {button.text()!r} button is not on screen"
    assert button.isEnabled(), f"the {button.text()!r} button is greyed out"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)

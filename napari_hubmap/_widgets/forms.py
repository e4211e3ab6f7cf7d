"""Small form controls the panels share: a labelled slider and a spin box made in one call."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QHBoxLayout, QLabel, QSlider, QSpinBox, QWidget


class LabeledSlider(QWidget):
    """A horizontal slider over integer steps showing its value as ``value * step``."""

    def __init__(self, low: int, high: int, value: int, step: float = 1.0, fmt: str = "{:g}"):
        super().__init__()
        self.step, self.fmt = step, fmt
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(low, high)
        self.slider.setValue(value)
        self.label = QLabel()
        self.label.setMinimumWidth(44)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.label)
        self.slider.valueChanged.connect(self._show)
        self._show()

    @property
    def valueChanged(self):
        return self.slider.valueChanged

    def value(self) -> float:
        return self.slider.value() * self.step

    def setValue(self, value: float) -> None:
        self.slider.setValue(int(round(value / self.step)))

    def _show(self, *_):
        self.label.setText(self.fmt.format(self.value()))


def spin(low: int, high: int, value: int, *, special: str = "", step: int = 1, tip: str = "") -> QSpinBox:
    """A spin box over ``[low, high]`` at ``value``; ``special`` names its lowest value, ``tip`` its tooltip."""
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    box.setSingleStep(step)
    if special:
        box.setSpecialValueText(special)
    if tip:
        box.setToolTip(tip)
    return box

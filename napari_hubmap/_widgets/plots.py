"""The panels' matplotlib figures: the Post-processing panel's Dice-against-threshold curve and the
Training panel's loss and validation curves. matplotlib is imported when a figure is made."""

from __future__ import annotations

import time

STEP_REDRAW_S = 0.3
"""Step events redraw the loss curve at most this often; epoch events always redraw."""


class ThresholdPlot:
    """One small figure: Dice against the threshold, the best one marked."""

    def __init__(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(3.2, 2.2), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(figure)
        self.canvas.setMinimumHeight(160)
        self.axes = figure.add_subplot(111)
        self.axes.set_xlabel("threshold")
        self.axes.set_ylabel("Dice")

    def plot(self, curve) -> None:
        """Draw a :func:`~napari_hubmap.postprocess.threshold_curve` result."""
        axes = self.axes
        axes.clear()
        axes.plot(curve.thresholds, curve.dice, "-o", markersize=3)
        axes.axvline(curve.best_threshold, color="tab:red", linestyle="--")
        axes.annotate(f"{curve.best_threshold:.2f}: {curve.best_dice:.3f}", (curve.best_threshold, curve.best_dice),
                      textcoords="offset points", xytext=(5, -12), fontsize=8, color="tab:red")
        axes.set_xlabel("threshold")
        axes.set_ylabel("Dice")
        axes.set_ylim(0, 1.02)
        self.canvas.draw_idle()


class TrainingCurves:
    """One small figure: training loss (per step and per epoch) and validation Dice / object F1."""

    def __init__(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(3.4, 2.2), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(figure)
        self.canvas.setMinimumHeight(170)
        self.loss_axes, self.val_axes = figure.subplots(1, 2)
        self.step_line, = self.loss_axes.plot([], [], "-", linewidth=0.8, alpha=0.6, label="step")
        self.epoch_loss_line, = self.loss_axes.plot([], [], "o-", markersize=3, label="epoch")
        self.dice_line, = self.val_axes.plot([], [], "o-", markersize=3, label="Dice")
        self.f1_line, = self.val_axes.plot([], [], "s--", markersize=3, label="object F1")
        self.loss_axes.set_title("train loss", fontsize=8)
        self.val_axes.set_title("validation", fontsize=8)
        self.val_axes.set_ylim(0, 1.02)
        for axes in (self.loss_axes, self.val_axes):
            axes.set_xlabel("epoch", fontsize=8)
            axes.tick_params(labelsize=7)
        self.val_axes.legend(fontsize=6, loc="lower right")
        self.clear()

    def clear(self):
        self.steps: tuple[list, list] = ([], [])
        self.epochs: list[dict] = []
        self._last_draw = 0.0
        self._update_lines()

    def add_step(self, x: float, loss) -> None:
        """A step's loss at fractional epoch ``x``; redraws at most every :data:`STEP_REDRAW_S`."""
        if loss is None:
            return
        self.steps[0].append(x)
        self.steps[1].append(float(loss))
        if time.monotonic() - self._last_draw >= STEP_REDRAW_S:
            self._update_lines()

    def add_epoch(self, event: dict) -> None:
        self.epochs.append(event)
        self._update_lines()

    def _update_lines(self) -> None:
        self.step_line.set_data(*self.steps)
        self._set_line(self.epoch_loss_line, "train_loss")
        self._set_line(self.dice_line, "val_dice")
        self._set_line(self.f1_line, "val_object_f1")
        self.loss_axes.relim()
        self.loss_axes.autoscale_view()
        self.val_axes.relim()
        self.val_axes.autoscale_view(scaley=False)
        self._last_draw = time.monotonic()
        self.canvas.draw_idle()

    def _set_line(self, line, key: str) -> None:
        points = [(e["epoch"], e[key]) for e in self.epochs if isinstance(e.get(key), (int, float))]
        line.set_data([p[0] for p in points], [p[1] for p in points])

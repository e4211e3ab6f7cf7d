"""Blend overlapping tile predictions into rows of the output grid, releasing rows as they finish.

Rows are held in chunk-high bands (weighted sum and weight, float32, full output width); memory
is a few bands whatever the slide's height. Contributions above ``rows_done`` (rows already final
on disk, e.g. when resuming) are ignored.
"""

from __future__ import annotations

import numpy as np


class RowAccumulator:
    def __init__(self, out_shape: tuple[int, int], chunk: int, rows_done: int = 0, end: int | None = None):
        """Rows [rows_done, end) of the grid (``end`` None: to its bottom) are blended; others are ignored."""
        self.height, self.width = out_shape
        self.end = self.height if end is None else min(end, self.height)
        self.chunk = chunk
        self.rows_done = rows_done
        self.bands: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _band(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self.bands:
            rows = min(self.chunk, self.height - index * self.chunk)
            self.bands[index] = (np.zeros((rows, self.width), np.float32), np.zeros((rows, self.width), np.float32))
        return self.bands[index]

    def add(self, y0: int, x0: int, values: np.ndarray | None, weights: np.ndarray) -> None:
        """Add ``values * weights`` (None: a skipped tile, zero prediction) and ``weights`` at (y0, x0)."""
        h, w = weights.shape
        y_start, y_stop = max(y0, self.rows_done), min(y0 + h, self.end)
        x_start, x_stop = max(x0, 0), min(x0 + w, self.width)
        if y_start >= y_stop or x_start >= x_stop:
            return
        for band in range(y_start // self.chunk, (y_stop - 1) // self.chunk + 1):
            b0 = band * self.chunk
            r0, r1 = max(y_start, b0), min(y_stop, b0 + self.chunk)
            total, weight = self._band(band)
            src_rows = slice(r0 - y0, r1 - y0)
            src_cols = slice(x_start - x0, x_stop - x0)
            tile_weights = weights[src_rows, src_cols]
            weight[r0 - b0 : r1 - b0, x_start:x_stop] += tile_weights
            if values is not None:
                total[r0 - b0 : r1 - b0, x_start:x_stop] += values[src_rows, src_cols] * tile_weights

    def finished(self, limit: int):
        """Yield (first row, uint8 rows) for every band that ends at or before ``limit``, in order."""
        limit = min(limit, self.end)
        while self.rows_done < self.end:
            band = self.rows_done // self.chunk
            b0 = band * self.chunk
            b1 = min(b0 + self.chunk, self.end)
            if b1 > limit:
                return
            total, weight = self.bands.pop(band, (None, None))
            if total is None:
                rows = np.zeros((b1 - b0, self.width), np.uint8)
            else:
                rows = np.rint(255.0 * np.divide(total, weight, out=np.zeros_like(total), where=weight > 0))
                rows = np.clip(rows, 0, 255).astype(np.uint8)
            self.rows_done = b1
            yield b0, rows

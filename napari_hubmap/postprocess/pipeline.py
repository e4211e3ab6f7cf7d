"""The three passes that turn a probability map into instance labels, shared by region and slide.

1. Components: threshold and label block by block, joined across block borders
   (:mod:`.components`): first pixel, box and area of every object.
2. Objects: each object in raster order of its first pixel, on its padded bounding box
   (:mod:`.objects`): hole filling, minimum size, watershed. Results are kept zlib-compressed
   (a glomerulus mask is a few hundred bytes), so memory stays small on a whole slide.
3. Paint: final ids in raster order of each (piece of an) object's first pixel, as
   skimage.measure.label would number them; block by block into an array or a labels store.

:func:`napari_hubmap.postprocess.postprocess_region` runs them on an in-memory array as one block,
:func:`napari_hubmap.postprocess.postprocess_slide` on a store block by block: identical labels.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import numpy as np

from ..progress import Steps
from .components import Components, find_components
from .config import PostprocessConfig
from .objects import ObjectResult, process_object
from .source import BlockSource, block_count, iter_blocks


class Instances:
    """Processed objects of a map with their final numbering; :meth:`paint` renders any window."""

    def __init__(self, shape: tuple[int, int], results: list[ObjectResult], block: int):
        self.shape = shape
        self.results = results
        self.block = block
        firsts = np.concatenate([r.firsts for r in results]) if results else np.zeros(0, np.int64)
        ranks = np.empty(firsts.size, dtype=np.int64)
        ranks[np.argsort(firsts, kind="stable")] = np.arange(1, firsts.size + 1)
        self.count = int(firsts.size)
        self.luts, start = [], 0
        for r in results:
            self.luts.append(np.concatenate(([0], ranks[start : start + r.firsts.size])))
            start += r.firsts.size
        self.buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, r in enumerate(results):
            for by in range(r.y0 // block, (r.y0 + r.height - 1) // block + 1):
                for bx in range(r.x0 // block, (r.x0 + r.width - 1) // block + 1):
                    self.buckets[(by, bx)].append(i)

    def paint(self, y0: int, y1: int, x0: int, x1: int, dtype=np.uint32) -> np.ndarray:
        """Labels of the block-aligned window rows [y0, y1) x cols [x0, x1)."""
        out = np.zeros((y1 - y0, x1 - x0), dtype=dtype)
        for i in self.buckets.get((y0 // self.block, x0 // self.block), ()):
            r = self.results[i]
            ry0, ry1 = max(y0, r.y0), min(y1, r.y0 + r.height)
            rx0, rx1 = max(x0, r.x0), min(x1, r.x0 + r.width)
            if ry0 >= ry1 or rx0 >= rx1:
                continue
            local = r.local()[ry0 - r.y0 : ry1 - r.y0, rx0 - r.x0 : rx1 - r.x0]
            window = out[ry0 - y0 : ry1 - y0, rx0 - x0 : rx1 - x0]
            inside = local > 0
            window[inside] = self.luts[i][local[inside]]
        return out


def instances(source: BlockSource, config: PostprocessConfig, block: int, steps: Steps | None = None) -> Instances:
    """Passes 1 and 2 over ``source``: the processed objects, numbered, ready to paint."""
    steps = steps or Steps(0)
    steps.check()
    components = find_components(source, config.lower_threshold, block, step=steps)
    steps.grow(len(components))
    results = _process_all(source, components, config, steps)
    return Instances(source.shape, results, block)


def _process_all(source: BlockSource, components: Components, config: PostprocessConfig, steps: Steps) -> list[ObjectResult]:
    absorbed = np.zeros(len(components), dtype=bool)
    results = []
    for index in range(len(components)):
        if not absorbed[index]:  # a container's first pixel comes before anything in its holes
            result, inside = process_object(source, components, index, config)
            absorbed[components.index_of_first(inside)] = True
            if result is not None:
                results.append(result)
        steps()
    return results


def paint_blocks(found: Instances, block: int, write: Callable[[int, int, np.ndarray], None], steps: Steps | None = None, dtype=np.uint32) -> None:
    """Pass 3: paint every ``block`` tile and hand it to ``write(y0, x0, labels)``."""
    for y0, y1, x0, x1 in iter_blocks(found.shape, block):
        write(y0, x0, found.paint(y0, y1, x0, x1, dtype))
        if steps is not None:
            steps()


def labels_array(source: BlockSource, config: PostprocessConfig, block: int) -> np.ndarray:
    """All three passes over ``source`` into one int32 array (the in-memory path)."""
    found = instances(source, config, block)
    out = np.zeros(source.shape, dtype=np.int32)

    def write(y0, x0, labels):
        out[y0 : y0 + labels.shape[0], x0 : x0 + labels.shape[1]] = labels

    paint_blocks(found, block, write, dtype=np.int32)
    return out


def total_steps(shape: tuple[int, int], block: int) -> int:
    """Units known before pass 1 (blocks of passes 1 and 3); pass 2 adds one per object."""
    return 2 * block_count(shape, block)

"""Growing an object's outline into the background by a few pixels, the same on every path.

A model whose threshold keeps false glomeruli out tends to trim the found ones to their tuft, where
annotators (HuBMAP's among them) draw Bowman's capsule. ``grow`` px brings each object's outline out:
a pixel below the threshold joins an object when it lies within ``grow`` px of it (Euclidean) and
strictly nearer to it than to any other above-threshold pixel (ties join neither), so two objects never
claim one pixel and nothing grows into another object or past the map's edge. Within an object split
by watershed, a joining pixel goes to its nearest piece (``skimage.segmentation.expand_labels``).

The rule needs only the object and the above-threshold pixels within ``2 * grow`` px of its bounding
box, so :mod:`.objects` (each object on its own padded box) and :mod:`.preview` (the region on screen)
give the same pixels whatever the block split.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def grow_padding(grow: int) -> int:
    """Pixels of context around an object's bounding box that :func:`grow_pieces` needs (besides the one
    pixel the object path always reads)."""
    return 2 * grow


def grow_pieces(pieces: np.ndarray, above: np.ndarray, grow: int, inside: np.ndarray | None = None) -> np.ndarray:
    """``pieces`` (int labels of one object, 0 elsewhere) grown by ``grow`` px under the module's rule.

    ``above``: the above-threshold pixels of the same window (the object's own included); ``inside``:
    the window's pixels that lie on the map (None: all). The window must reach ``2 * grow`` px beyond the
    object on every side that the map continues."""
    if grow <= 0:
        return pieces
    own = pieces > 0
    if not own.any():
        return pieces
    to_own = ndimage.distance_transform_edt(~own)
    others = above & ~own
    to_others = ndimage.distance_transform_edt(~others) if others.any() else np.full(own.shape, np.inf)
    joins = ~own & ~above & (to_own <= grow) & (to_own < to_others)
    if inside is not None:
        joins &= inside
    if not joins.any():
        return pieces
    from skimage.segmentation import expand_labels

    nearest = expand_labels(pieces, distance=grow)
    grown = pieces.copy()
    grown[joins] = nearest[joins]
    return grown

"""A stream of label edits for the SIGKILL tests of the project's edits store.

``python tests/project_edit_stream.py PROJECT SLIDE_ID SEED WINDOW`` opens the project and the slide's
edits store, starts an :class:`Autosaver` with ``WINDOW`` seconds, prints ``ready``, then applies edit
1, 2, 3, ... (:func:`edit`, deterministic by seed and number) with short random pauses, printing
``<sequence> <time.monotonic()>`` after each, and ``saved <sequence> <time.monotonic()>`` each time the
autosaver reports a flush durable; every 7th edit it rewrites the manifest and every 11th it changes a
tile's review state (both atomic). It runs until killed. The test replays :func:`edit` to know exactly
what the store must hold.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np


def edit(shape, seed: int, k: int) -> tuple[int, int, np.ndarray]:
    """Edit ``k`` (1-based): (y0, x0, patch) painting label k on a rectangle, with an erased hole."""
    rng = np.random.default_rng([seed, k])
    h, w = int(rng.integers(4, 200)), int(rng.integers(4, 200))
    y0, x0 = int(rng.integers(0, shape[0] - h)), int(rng.integers(0, shape[1] - w))
    patch = np.full((h, w), k, dtype=np.uint32)
    patch[h // 4 : h // 2, w // 4 : w // 2] = 0
    return y0, x0, patch


def replay(initial: np.ndarray, seed: int, last: int) -> np.ndarray:
    """The labels after edits 1..``last`` applied to ``initial``."""
    out = initial.copy()
    for k in range(1, last + 1):
        y0, x0, patch = edit(out.shape, seed, k)
        out[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]] = patch
    return out


_PRINT_LOCK = threading.Lock()


def say(line: str) -> None:
    """One whole line on stdout (the autosaver's thread and the edit loop both print)."""
    with _PRINT_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main(root: str, slide_id: str, seed: int, window: float) -> None:
    from napari_hubmap.project.edits import Autosaver, EditStore
    from napari_hubmap.project.manifest import Project
    from napari_hubmap.project.review import set_state
    from napari_hubmap.project.tiles import tile_grid

    project = Project.open(root, verify=False)
    store = EditStore.open(project.resolve(project.slide(slide_id).edits))
    saver = Autosaver(store, window=window, on_saved=lambda sequence: say(f"saved {sequence} {time.monotonic():.6f}"))
    tiles = tile_grid(store.shape, project.tile_size)
    rng = np.random.default_rng(seed)
    say("ready")
    k = 0
    while True:
        k += 1
        y0, x0, patch = edit(store.shape, seed, k)
        sequence = store.apply(y0, x0, patch)
        assert sequence == k
        say(f"{sequence} {time.monotonic():.6f}")
        if k % 7 == 0:
            project.save()
        if k % 11 == 0:
            set_state(project, slide_id, tiles[k % len(tiles)].key, ("dropped", "corrected", "unreviewed")[k % 3])
        time.sleep(float(rng.uniform(0.0, 0.02)))
    saver.close()  # never reached: the test kills the process


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))

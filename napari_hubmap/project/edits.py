"""Durable label edits: a chunk-wise zarr labels store that a hard kill can never tear.

:class:`EditStore` holds the corrected labels of one slide at the working scale as a zarr (v2) array
of uint32 chunks (512 x 512 by default). Edits (:meth:`EditStore.apply`, or ``store[...] = value`` as a
napari Labels layer writes its data) change chunks in memory and mark them dirty, each edit bumping a
sequence number. :meth:`EditStore.flush` makes everything up to the current sequence durable in one
transaction:

1. the dirty chunks are encoded with the array's own codecs (through an in-memory zarr store holding a
   copy of the array's metadata, so the bytes are exactly what zarr would write) into a staging folder
   ``.staging-<uuid>/`` with ``chunks.json`` (sequence, chunk keys), every file fsynced;
2. the staging folder is renamed to ``pending-<sequence>/``: **the commit point**;
3. each chunk file is moved (``os.replace``, atomic) onto its key in the array; chunks that became all
   zero are deleted (zarr reads a missing chunk as the fill value);
4. ``journal.json`` (``sequence``, time) is written atomically, then the pending folder is renamed to
   ``.applied-pending-<sequence>/`` and removed (a kill half-way through the removal leaves a folder
   that opening deletes, never a pending folder missing its ``chunks.json``).

Opening for writing completes a pending folder left by a kill (steps 3-4 are idempotent: a chunk file
already moved is skipped) and removes staging folders (never committed). So after a kill at any
moment the store holds exactly the edits 1..S of some flushed sequence S (never a mix of two flushes,
never a torn chunk), and ``journal.json`` says S. zarr 3.1.6's own ``LocalStore`` also writes a chunk
to a temporary file and renames it, but a multi-chunk write through it could be cut between chunks;
this module writes the chunk files itself. A writer holds the store's :class:`~napari_hubmap.locks.FolderLock`
(``.lock`` inside it, released by the kernel when the process dies); a second writer, in this process or
another, gets one error naming the holder.

:class:`Autosaver` flushes in a background thread at most ``window / 2`` seconds after the first
unsaved edit (so an edit is durable within ``window`` seconds, 2 by default, while a flush takes under
``window / 2``), and once more on :meth:`Autosaver.close` (and at interpreter exit). Undo and redo stay
napari's: its Labels layer replays them as writes into the layer's data, which, when that data is the
store, are edits like any other.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import zarr

from ..atomic import atomic_path, write_failures, write_text_atomic
from ..errors import HubmapInputError
from ..jsonio import load_json
from ..locks import FolderLock
from .clock import now_iso

KIND = "napari-hubmap-edits"
FORMAT_VERSION = 1
JOURNAL = "journal.json"
PENDING = "pending-"
APPLIED = ".applied-"
"""A pending folder whose chunks are in place and journal written, being removed (renamed first)."""
STAGING = ".staging-"
CHUNKS = "chunks.json"
_META_FILES = (".zarray", ".zattrs", "zarr.json")
_log = logging.getLogger(__name__)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def read_journal(path) -> dict | None:
    """The store's ``journal.json``: None when absent, unreadable, or not an object whose ``format_version``
    and ``sequence`` (where present) are whole numbers."""
    try:
        journal = load_json(Path(path) / JOURNAL, "edits journal")
    except HubmapInputError:
        return None
    if not isinstance(journal, dict) or any(type(journal.get(key, 0)) is not int for key in ("format_version", "sequence")):
        return None
    return journal


class EditStore:
    """Labels of one slide at the working scale, edited in memory chunk by chunk, flushed durably.

    Array-like (``shape``, ``dtype``, ``ndim``, ``size``, ``store[...]``, ``store[...] = v``,
    ``np.asarray(store)``) so it can be a napari Labels layer's data directly: every write napari
    makes (paint, fill, polygon, erase, undo, redo) becomes an :meth:`apply`.
    """

    def __init__(self, path: Path, array: zarr.Array, *, read_only: bool, writer_lock: FolderLock | None,
                 sequence: int):
        self.path = path
        self._array = array
        self.read_only = read_only
        self.writer_lock = writer_lock
        self.shape: tuple[int, int] = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.chunk: tuple[int, int] = tuple(int(c) for c in array.chunks)
        self.sequence = sequence
        self.saved_sequence = sequence
        self.dirty_since: float | None = None
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self._version: dict[tuple[int, int], int] = {}
        self._dirty: set[tuple[int, int]] = set()
        self._lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self.closed = False

    # ------------------------------------------------------------------------------------------ open
    @classmethod
    def create(cls, path, shape, *, chunk: int = 512, dtype="uint32", initial=None, attrs: dict | None = None) -> None:
        """Make a new store at ``path`` (atomically: a temporary folder renamed when complete), filled
        from ``initial`` (an (H, W) array-like, read in blocks) or zeros."""
        path = Path(path)
        if path.exists():
            raise HubmapInputError(path, "exists; refusing to replace an edits store")
        shape = (int(shape[0]), int(shape[1]))
        if min(shape) < 1 or chunk < 1:
            raise HubmapInputError(path, f"shape {shape} and chunk {chunk} must be positive")
        with atomic_path(path, is_dir=True) as tmp:
            array = zarr.create_array(str(tmp), shape=shape, chunks=(min(chunk, shape[0]), min(chunk, shape[1])),
                                      dtype=dtype, fill_value=0, zarr_format=2)
            if initial is not None:
                if tuple(int(s) for s in initial.shape) != shape:
                    raise HubmapInputError(path, f"initial labels are {tuple(initial.shape)}, the store is {shape}")
                block = max(array.chunks[0], 2048 // array.chunks[0] * array.chunks[0])
                for y0 in range(0, shape[0], block):
                    for x0 in range(0, shape[1], block):
                        part = np.asarray(initial[y0 : y0 + block, x0 : x0 + block])
                        if part.any():
                            array[y0 : y0 + part.shape[0], x0 : x0 + part.shape[1]] = part
            array.attrs["napari_hubmap"] = {"kind": KIND, "format_version": FORMAT_VERSION, "created": now_iso(),
                                            **(attrs or {})}
            write_text_atomic(tmp / JOURNAL, json.dumps({"kind": KIND, "format_version": FORMAT_VERSION,
                                                         "sequence": 0, "saved": now_iso()}))

    @classmethod
    def open(cls, path, shape=None, chunk: int = 512, *, dtype="uint32", initial=None, attrs: dict | None = None,
             read_only: bool = False, create: bool = True) -> "EditStore":
        """Open the store at ``path`` (made first when absent and ``create``; see :meth:`create`).

        ``shape``, when given, must match. For writing, takes the store's lock and completes a flush
        a kill interrupted. ``read_only`` readers take no lock; while a writer is flushing they may
        see part of that flush.
        """
        path = Path(path)
        if not path.exists():
            if not create or read_only or shape is None:
                raise HubmapInputError(path, "edits store not found")
            cls.create(path, shape, chunk=chunk, dtype=dtype, initial=initial, attrs=attrs)
        journal = read_journal(path)
        if journal is None or journal.get("kind") != KIND:
            raise HubmapInputError(path, f"not a napari-hubmap edits store ({JOURNAL} missing or unreadable)")
        if int(journal.get("format_version", 0)) > FORMAT_VERSION:
            raise HubmapInputError(path, f"edits store format {journal['format_version']} is newer than this version reads ({FORMAT_VERSION})")
        writer_lock = None if read_only else FolderLock(path, f"editing {path.name}").acquire()
        try:
            sequence = int(journal.get("sequence", 0))
            if not read_only:
                sequence = max(sequence, _recover(path))
            try:
                array = zarr.open_array(str(path), mode="r")
            except Exception as exc:
                raise HubmapInputError(path, f"not a readable zarr array ({exc})") from None
            if shape is not None and tuple(int(s) for s in array.shape) != tuple(int(s) for s in shape):
                raise HubmapInputError(path, f"edits store is {tuple(array.shape)}, expected {tuple(shape)}")
            if array.ndim != 2:
                raise HubmapInputError(path, f"edits store must be 2-D, is {array.ndim}-D")
        except BaseException:
            if writer_lock is not None:
                writer_lock.release()
            raise
        return cls(path, array, read_only=read_only, writer_lock=writer_lock, sequence=sequence)

    # ----------------------------------------------------------------------------------- array-like
    @property
    def ndim(self) -> int:
        return 2

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def chunks(self) -> tuple[int, int]:
        return self.chunk

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        data = self.read(0, self.shape[0], 0, self.shape[1])
        return data if dtype is None else data.astype(dtype)

    def __getitem__(self, key):
        fancy = _fancy(key, self.shape)
        if fancy is not None:
            ys, xs = fancy
            if ys.size == 0:
                return np.zeros(ys.shape, self.dtype)
            y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
            return self.read(y0, y1, x0, x1)[ys - y0, xs - x0]
        (y0, y1, x0, x1), local = _basic(key, self.shape)
        return self.read(y0, y1, x0, x1)[local]

    def __setitem__(self, key, value) -> None:
        fancy = _fancy(key, self.shape)
        if fancy is not None:
            ys, xs = fancy
            if ys.size == 0:
                return
            y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
            region = self.read(y0, y1, x0, x1)
            region[ys - y0, xs - x0] = value
            self.apply(y0, x0, region)
            return
        (y0, y1, x0, x1), local = _basic(key, self.shape)
        if y1 <= y0 or x1 <= x0:
            return
        if all(isinstance(part, slice) and part == slice(None) for part in local) and np.shape(value) == (y1 - y0, x1 - x0):
            self.apply(y0, x0, value)  # napari writes whole bounding boxes back: no read needed
            return
        region = self.read(y0, y1, x0, x1)
        region[local] = value
        self.apply(y0, x0, region)

    def window(self, y0: int, y1: int, x0: int, x1: int) -> "EditWindow":
        """An array-like view of [y0, y1) x [x0, x1): a Labels layer of one review tile (with
        ``translate`` at its origin) instead of the whole slide; writes go to this store."""
        return EditWindow(self, y0, y1, x0, x1)

    # ------------------------------------------------------------------------------------- editing
    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Labels in [y0, y1) x [x0, x1) as they are now (unsaved edits included), a fresh array."""
        y0, x0 = max(0, int(y0)), max(0, int(x0))
        y1, x1 = min(self.shape[0], int(y1)), min(self.shape[1], int(x1))
        if y1 <= y0 or x1 <= x0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0)), self.dtype)
        cy, cx = self.chunk
        keys = self._chunks_of(y0, y1, x0, x1)
        with self._lock:  # a chunk leaves the cache only once its flushed file is in place
            cached = [(k, self._cache[k].copy()) for k in keys if k in self._cache]
        if len(cached) == len(keys):
            out = np.empty((y1 - y0, x1 - x0), self.dtype)
        else:
            out = np.array(self._array[y0:y1, x0:x1], dtype=self.dtype)
        for (ci, cj), data in cached:
            oy0, ox0 = max(y0, ci * cy), max(x0, cj * cx)
            oy1, ox1 = min(y1, ci * cy + data.shape[0]), min(x1, cj * cx + data.shape[1])
            out[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0] = data[oy0 - ci * cy : oy1 - ci * cy, ox0 - cj * cx : ox1 - cj * cx]
        return out

    def apply(self, y0: int, x0: int, patch) -> int:
        """Write ``patch`` (2-D) at (y0, x0); returns this edit's sequence number (durable once
        :attr:`saved_sequence` reaches it)."""
        if self.read_only or self.closed:
            raise HubmapInputError(self.path, "edits store is read-only" if self.read_only else "edits store is closed")
        patch = np.asarray(patch)
        if patch.ndim != 2:
            raise HubmapInputError(self.path, f"an edit must be a 2-D patch, got shape {patch.shape}")
        y0, x0 = int(y0), int(x0)
        y1, x1 = y0 + patch.shape[0], x0 + patch.shape[1]
        if y0 < 0 or x0 < 0 or y1 > self.shape[0] or x1 > self.shape[1]:
            raise HubmapInputError(self.path, f"edit [{y0}:{y1}, {x0}:{x1}] lies outside the {self.shape} labels")
        if patch.dtype != self.dtype:
            if patch.size and (patch.min() < 0 or (patch.dtype.kind in "iu" and patch.max() > np.iinfo(self.dtype).max)):
                raise HubmapInputError(self.path, f"label values must fit {self.dtype}")
            patch = patch.astype(self.dtype)
        cy, cx = self.chunk
        with self._lock:
            for key in self._chunks_of(y0, y1, x0, x1):
                ci, cj = key
                oy0, ox0 = max(y0, ci * cy), max(x0, cj * cx)
                oy1, ox1 = min(y1, (ci + 1) * cy, self.shape[0]), min(x1, (cj + 1) * cx, self.shape[1])
                part = patch[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0]
                chunk = self._chunk(key)
                target = chunk[oy0 - ci * cy : oy1 - ci * cy, ox0 - cj * cx : ox1 - cj * cx]
                if np.array_equal(target, part):
                    continue
                target[...] = part
                self._dirty.add(key)
                self._version[key] = self._version.get(key, 0) + 1
            self.sequence += 1
            sequence = self.sequence
            if self.dirty_since is None:
                self.dirty_since = time.monotonic()
        for listener in list(self._listeners):
            listener()
        return sequence

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every edit (the :class:`Autosaver` wakes up this way)."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    @property
    def unsaved(self) -> bool:
        return self.sequence > self.saved_sequence

    def _chunks_of(self, y0, y1, x0, x1) -> list[tuple[int, int]]:
        cy, cx = self.chunk
        return [(ci, cj) for ci in range(y0 // cy, (y1 - 1) // cy + 1) for cj in range(x0 // cx, (x1 - 1) // cx + 1)]

    def _chunk(self, key) -> np.ndarray:
        chunk = self._cache.get(key)
        if chunk is None:
            ci, cj = key
            cy, cx = self.chunk
            chunk = np.asarray(self._array[ci * cy : (ci + 1) * cy, cj * cx : (cj + 1) * cx], dtype=self.dtype).copy()
            self._cache[key] = chunk
            self._version.setdefault(key, 0)
        return chunk

    # ------------------------------------------------------------------------------------- flushing
    def flush(self) -> int:
        """Make every edit so far durable (see the module doc); returns the durable sequence."""
        if self.read_only:
            return self.saved_sequence
        with self._flush_lock:
            with self._lock:
                sequence = self.sequence
                if sequence == self.saved_sequence:
                    self.dirty_since = None
                    return sequence
                keys = sorted(self._dirty)
                snapshot = {k: self._cache[k].copy() for k in keys}
                versions = {k: self._version[k] for k in keys}
                self._dirty.clear()
                self.dirty_since = None
            try:
                with write_failures(self.path):  # disk full, I/O error: one error naming the store
                    self._commit(sequence, snapshot)
            except BaseException:  # the edits stay in memory, dirty: the next flush writes them
                with self._lock:
                    self._dirty.update(keys)
                    if self.dirty_since is None:
                        self.dirty_since = time.monotonic()
                raise
            with self._lock:
                for key, version in versions.items():
                    if key not in self._dirty and self._version.get(key) == version:
                        self._cache.pop(key, None)
                        self._version.pop(key, None)
                self.saved_sequence = sequence
        return sequence

    def _commit(self, sequence: int, snapshot: dict) -> None:
        for leftover in sorted(self.path.glob(f"{PENDING}*")):  # committed by a flush that failed after its
            _apply_pending(self.path, leftover)  # commit point: applied now, never after this newer one
        ops = self._encode(snapshot)
        staging = self.path / f"{STAGING}{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            entries = []
            for n, (key, data) in enumerate(ops):
                name = None
                if data is not None:
                    name = f"{n}.chunk"
                    _write_durable(staging / name, data)
                entries.append({"key": key, "file": name})
            _write_durable(staging / CHUNKS, json.dumps({"sequence": sequence, "chunks": entries}).encode())
            _fsync_dir(staging)
            pending = self.path / f"{PENDING}{sequence:012d}"
            os.rename(staging, pending)  # the commit point
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(self.path)
        _apply_pending(self.path, pending)

    def _encode(self, snapshot: dict) -> list[tuple[str, bytes | None]]:
        """(chunk key, encoded bytes or None for an all-zero chunk) per chunk, encoded by zarr itself
        into an in-memory store that holds a copy of this array's metadata."""
        from zarr.core.buffer import default_buffer_prototype
        from zarr.storage import MemoryStore

        prototype = default_buffer_prototype()
        contents = {name: prototype.buffer.from_bytes((self.path / name).read_bytes())
                    for name in _META_FILES if (self.path / name).is_file()}
        memory = MemoryStore(contents)
        staging = zarr.open_array(memory, mode="r+")
        cy, cx = self.chunk
        ops = []
        for (ci, cj), data in snapshot.items():
            key = staging.metadata.encode_chunk_key((ci, cj))
            staging[ci * cy : ci * cy + data.shape[0], cj * cx : cj * cx + data.shape[1]] = data
            buffer = contents.get(key)
            ops.append((key, None if buffer is None else buffer.to_bytes()))
            contents.pop(key, None)
        return ops

    def close(self) -> None:
        """Flush and release the lock (the store cannot be edited afterwards). A flush that fails (disk
        full) raises and leaves the store open, its edits in memory, so a later close can still save them."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        if self.writer_lock is not None:
            self.writer_lock.release()

    def __enter__(self) -> "EditStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EditWindow:
    """A rectangle of an :class:`EditStore`, array-like (basic indexing and whole-box writes, as napari's
    Labels layer uses them); reads and writes go to the store at an offset."""

    def __init__(self, store: EditStore, y0: int, y1: int, x0: int, x1: int):
        y0, x0 = max(0, int(y0)), max(0, int(x0))
        y1, x1 = min(store.shape[0], int(y1)), min(store.shape[1], int(x1))
        if y1 <= y0 or x1 <= x0:
            raise HubmapInputError(store.path, f"empty window [{y0}:{y1}, {x0}:{x1}]")
        self.store, self.origin = store, (y0, x0)
        self.shape = (y1 - y0, x1 - x0)
        self.dtype = store.dtype

    ndim = 2

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def __array__(self, dtype=None, copy=None):
        y0, x0 = self.origin
        data = self.store.read(y0, y0 + self.shape[0], x0, x0 + self.shape[1])
        return data if dtype is None else data.astype(dtype)

    def _shift(self, key):
        fancy = _fancy(key, self.shape)
        if fancy is not None:
            return (fancy[0] + self.origin[0], fancy[1] + self.origin[1]), None
        (y0, y1, x0, x1), local = _basic(key, self.shape)
        oy, ox = self.origin
        return (slice(y0 + oy, y1 + oy), slice(x0 + ox, x1 + ox)), local

    def __getitem__(self, key):
        shifted, local = self._shift(key)
        data = self.store[shifted]
        return data if local is None else data[local]

    def __setitem__(self, key, value) -> None:
        shifted, local = self._shift(key)
        if local is None or all(isinstance(p, slice) and p == slice(None) for p in local):
            self.store[shifted] = value
            return
        region = self.store[shifted]
        region[local] = value
        self.store[shifted] = region


# -------------------------------------------------------------------------------------------- recovery


def _apply_pending(path: Path, pending: Path) -> int:
    """Move a committed flush's chunk files into place, write the journal, remove the folder."""
    try:
        record = load_json(pending / CHUNKS, "committed edits record")
        sequence = int(record["sequence"])
        entries = list(record["chunks"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HubmapInputError(pending, f"committed edits are unreadable ({exc})") from None
    for entry in entries:
        target = path / entry["key"]
        if entry["file"] is None:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            continue
        source = pending / entry["file"]
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
    journal = read_journal(path) or {"kind": KIND, "format_version": FORMAT_VERSION}
    journal.update(sequence=max(sequence, int(journal.get("sequence", 0))), saved=now_iso())
    write_text_atomic(path / JOURNAL, json.dumps(journal))
    applied = path / f"{APPLIED}{pending.name}"
    os.rename(pending, applied)  # atomic: a kill inside rmtree must not leave a pending folder without chunks.json
    shutil.rmtree(applied, ignore_errors=True)
    return sequence


def _recover(path: Path) -> int:
    """Finish flushes a kill interrupted after their commit point; drop uncommitted staging."""
    sequence = 0
    for leftover in sorted(path.glob(f"{STAGING}*")) + sorted(path.glob(f"{APPLIED}*")):
        shutil.rmtree(leftover, ignore_errors=True)
    for pending in sorted(path.glob(f"{PENDING}*")):
        sequence = max(sequence, _apply_pending(path, pending))
    for partial in path.glob(f".{JOURNAL}.*"):  # a temporary of write_text_atomic
        with contextlib.suppress(OSError):
            partial.unlink()
    return sequence


# ------------------------------------------------------------------------------------------- indexing


def _fancy(key, shape):
    """(ys, xs) int arrays for an advanced index (two int arrays or a bool mask), else None."""
    if isinstance(key, np.ndarray) and key.dtype == bool:
        if key.shape != tuple(shape):
            raise IndexError(f"boolean index of shape {key.shape} does not match {shape}")
        return np.nonzero(key)
    if isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, (np.ndarray, list)) for k in key):
        ys, xs = np.broadcast_arrays(np.asarray(key[0], dtype=np.int64), np.asarray(key[1], dtype=np.int64))
        ys = np.where(ys < 0, ys + shape[0], ys)
        xs = np.where(xs < 0, xs + shape[1], xs)
        if ys.size and (ys.min() < 0 or ys.max() >= shape[0] or xs.min() < 0 or xs.max() >= shape[1]):
            raise IndexError("index out of bounds")
        return ys, xs
    if isinstance(key, tuple) and any(isinstance(k, (np.ndarray, list)) for k in key):
        raise IndexError("mixed basic and advanced indexing is not supported by EditStore")
    return None


def _basic(key, shape):
    """((y0, y1, x0, x1) bounding box, index into the box) for ints, slices and Ellipsis."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + (slice(None),) * (2 - len(key) + 1) + key[at + 1 :]
    if len(key) > 2:
        raise IndexError(f"too many indices for a 2-D array: {key!r}")
    key = key + (slice(None),) * (2 - len(key))
    box, local = [], []
    for k, n in zip(key, shape):
        if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            i = int(k) + (n if k < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {k} is out of bounds for size {n}")
            box += [i, i + 1]
            local.append(0)
        elif isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step == 1:
                box += [start, max(start, stop)]
                local.append(slice(None))
                continue
            idx = np.arange(start, stop, step)
            lo = int(idx.min()) if idx.size else 0
            box += [lo, int(idx.max()) + 1 if idx.size else 0]
            local.append(idx - lo)
        else:
            raise IndexError(f"unsupported index {k!r}")
    if all(isinstance(part, np.ndarray) for part in local):
        local = list(np.ix_(*local))
    return tuple(box), tuple(local)


# ------------------------------------------------------------------------------------------ autosave


class Autosaver:
    """Flush ``store`` in a background thread at most ``delay`` (default ``window / 2``) seconds after
    the first unsaved edit, and on :meth:`close` (also registered for interpreter exit).

    ``on_saved(sequence)`` runs after each flush, ``on_error(exc)`` when one fails (it is retried after
    ``delay``; the edits stay in memory until a flush succeeds); both in the autosave thread. ``last_error``
    keeps the latest failure; without ``on_error`` the first failure of a run of them is logged.
    """

    def __init__(self, store: EditStore, window: float = 2.0, *, delay: float | None = None,
                 on_saved: Callable[[int], None] | None = None, on_error: Callable[[BaseException], None] | None = None):
        if not window > 0:
            raise HubmapInputError(None, f"autosave window must be > 0 seconds, got {window!r}")
        self.store = store
        self.window = float(window)
        self.delay = self.window / 2 if delay is None else float(delay)
        self.on_saved, self.on_error = on_saved, on_error
        self.last_error: BaseException | None = None
        self.flushes = 0
        self._cond = threading.Condition()
        self._stop = False
        store.add_listener(self.notify)
        self._thread = threading.Thread(target=self._run, name=f"autosave {store.path.name}", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def notify(self) -> None:
        """Tell the saver an edit happened (the store does this itself after every :meth:`EditStore.apply`)."""
        with self._cond:
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and self.store.dirty_since is None:
                    self._cond.wait()
                if self._stop:
                    return
                due = (self.store.dirty_since or time.monotonic()) + self.delay
                while not self._stop and time.monotonic() < due:
                    self._cond.wait(max(0.0, due - time.monotonic()))
                if self._stop:
                    return
            try:
                sequence = self.store.flush()
                self.flushes += 1
                self.last_error = None
                if self.on_saved is not None:
                    self.on_saved(sequence)
            except Exception as exc:  # keep the thread alive: report, wait, retry (the edits stay in memory)
                if self.last_error is None and self.on_error is None:
                    _log.warning("autosave of %s failed, retrying every %g s: %s", self.store.path, self.delay, exc)
                self.last_error = exc
                if self.on_error is not None:
                    self.on_error(exc)
                with self._cond:
                    self._cond.wait(self.delay)

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop the thread and flush what is left (raises if that last flush fails)."""
        atexit.unregister(self.close)
        with self._cond:
            if self._stop:
                return
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self.store.remove_listener(self.notify)
        if not self.store.closed:
            self.store.flush()

    def __enter__(self) -> "Autosaver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

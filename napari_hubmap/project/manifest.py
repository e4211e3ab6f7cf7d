"""The project manifest ``DIR/project.json``: a human-readable, versioned JSON model of a curation project.

Layout of a project folder (paths in the manifest are relative to it, POSIX style)::

    project.json                 this manifest (format_version 1)
    review.json                  review state per tile (:mod:`.review`)
    ground_truth/<id>.<ext>      the imported annotation file, copied
    ground_truth/<id> (labels)   it rasterised at the working scale
    pseudo_labels/<id> (labels)  the primary prediction post-processed
    edits/<id>.zarr              corrections painted in napari (:mod:`.edits`), made on first use

where ``<id> (labels)`` is slide ``<id>``'s labels store (uint32 OME-Zarr labels, named by
:func:`napari_hubmap.stores.naming.labels_path`).

Slides and probability maps stay where they are: their paths are absolute, or relative when they lie
inside the folder. Fields that name files the project owns (ground truth, pseudo-labels, edits) must be
relative and inside the folder. Reading is strict: a path that escapes the folder, a
``format_version`` newer than this release reads, a missing slide or map, a slide whose content hash
changed, or JSON that is not this schema raises :class:`~napari_hubmap.errors.HubmapInputError` naming
the file and the problem; reading never writes. Every write goes through
:func:`napari_hubmap.atomic.write_text_atomic` (temporary file, fsync, rename), so a kill leaves the old
manifest or the new one.

Slide hashes (``hash.algorithm``): ``"sha256"`` of the whole file for files up to 12 MiB, else
``"quick-sha256-v1"``: SHA-256 of a tag, the file size (8 bytes little-endian) and the first, middle
(from ``(size - 4 MiB) // 2``) and last 4 MiB; it reads 12 MiB of a 5 GB slide, and catches another
file, a truncated or rewritten one, but not a change confined to the unread middle. ``add_slide(...,
full_hash=True)`` records a full ``"sha256"`` instead (slow on large files).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..atomic import write_text_atomic
from ..errors import HubmapInputError
from ..jsonio import load_json
from .clock import now_iso  # also imported from here (project.build)

KIND = "napari-hubmap-project"
FORMAT_VERSION = 1
MANIFEST = "project.json"
FULL_HASH = "sha256"
QUICK_HASH = "quick-sha256-v1"
QUICK_BLOCK = 4 * 1024 * 1024
_QUICK_TAG = b"napari-hubmap quick-sha256 v1\0"
SLIDE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
DEFAULT_DOWNSCALE = 2.0
"""A new project's working scale (full-resolution pixels per pixel) when neither it nor a prediction gives one."""
DEFAULT_TILE = 512
"""A new project's review tile size at the working scale."""
MAX_SIDE = 2**31 - 1
"""The longest slide side (pixels) a manifest may record: beyond any slide, and where sizes stop fitting int32."""


# ----------------------------------------------------------------------------------------------- hashes


@dataclass(frozen=True)
class FileHash:
    algorithm: str
    value: str
    size: int

    def as_dict(self) -> dict:
        return {"algorithm": self.algorithm, "value": self.value, "size": self.size}


def file_hash(path, *, full: bool = False, algorithm: str | None = None) -> FileHash:
    """Hash of a file as the manifest records it (see the module doc); ``algorithm`` forces one."""
    path = Path(path)
    size = path.stat().st_size
    if algorithm is None:
        algorithm = FULL_HASH if full or size <= 3 * QUICK_BLOCK else QUICK_HASH
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        if algorithm == FULL_HASH:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        elif algorithm == QUICK_HASH:
            digest.update(_QUICK_TAG + size.to_bytes(8, "little"))
            for offset in (0, max(0, (size - QUICK_BLOCK) // 2), max(0, size - QUICK_BLOCK)):
                fh.seek(offset)
                digest.update(fh.read(QUICK_BLOCK))
        else:
            raise HubmapInputError(path, f"unknown hash algorithm {algorithm!r}")
    return FileHash(algorithm, digest.hexdigest(), size)


def sha256_file(path) -> str:
    return file_hash(path, algorithm=FULL_HASH).value


def working_shape_of(shape, downscale: float) -> tuple[int, int]:
    """ceil(full / downscale) per axis: the grid of probability maps and rasterised labels."""
    return math.ceil(int(shape[0]) / downscale), math.ceil(int(shape[1]) / downscale)


# ----------------------------------------------------------------------------------------------- model


@dataclass
class GroundTruth:
    """Imported annotations: ``file`` (the copy in the project), ``original`` (where it came from,
    informational), ``sha256`` of the copy, ``labels`` (rasterised store), ``objects`` count and their
    median area."""

    file: str
    original: str
    sha256: str
    labels: str
    objects: int
    rle_id: str | None = None
    median_area: float | None = None  # of its objects, in working-scale pixels (the ranking's size scale)

    def as_dict(self) -> dict:
        return {"file": self.file, "original": self.original, "sha256": self.sha256, "labels": self.labels,
                "objects": self.objects, "rle_id": self.rle_id, "median_area": self.median_area}


@dataclass
class PredictionEntry:
    """A probability map (see :func:`napari_hubmap.stores.naming.probability_path`) at the project's
    working scale (its ``level``), the threshold its foreground uses, the models that made it, and its
    post-processed labels."""

    path: str
    level: int
    threshold: float
    models: list = field(default_factory=list)
    pseudo_labels: str | None = None
    postprocess: dict | None = None

    def as_dict(self) -> dict:
        return {"path": self.path, "level": self.level, "threshold": self.threshold, "models": self.models,
                "pseudo_labels": self.pseudo_labels, "postprocess": self.postprocess}


@dataclass
class SlideEntry:
    """A slide of the project. ``mpp``: its µm/px when known, given (``mpp_source`` "option", e.g.
    ``add-slide --mpp``; later commands use it) or the file's ("file"); null when neither, so the
    assumption of :mod:`napari_hubmap.slide.scale` applies. ``mpp_file``: what the file says."""

    id: str
    path: str
    hash: FileHash
    shape: tuple[int, int]
    mpp: float | None
    ground_truth: GroundTruth | None = None
    predictions: list[PredictionEntry] = field(default_factory=list)
    edits: str = ""
    added: str = ""
    mpp_source: str | None = None
    mpp_file: float | None = None

    @property
    def given_mpp(self) -> float | None:
        """The µm/px given for this slide (to open it with), else None."""
        return self.mpp if self.mpp_source == "option" else None

    @property
    def scale(self):
        """The slide's :class:`~napari_hubmap.slide.scale.SlideScale` as recorded."""
        from ..slide.scale import slide_scale

        return slide_scale(self.mpp_file if self.mpp_source == "option" else self.mpp, self.given_mpp)

    def as_dict(self) -> dict:
        return {
            "id": self.id, "path": self.path, "hash": self.hash.as_dict(), "shape": list(self.shape), "mpp": self.mpp,
            "mpp_source": self.mpp_source, "mpp_file": self.mpp_file,
            "ground_truth": self.ground_truth.as_dict() if self.ground_truth else None,
            "predictions": [p.as_dict() for p in self.predictions], "edits": self.edits, "added": self.added,
        }


@dataclass
class Project:
    """An open project. ``root`` is the folder; ``review`` the tile states (:class:`.review.ReviewState`)."""

    root: Path
    tile_size: int
    downscale: float
    slides: list[SlideEntry] = field(default_factory=list)
    models: list = field(default_factory=list)
    created: str = ""
    modified: str = ""
    format_version: int = FORMAT_VERSION
    review: object = None

    # --- paths
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def resolve(self, recorded: str) -> Path:
        """A path as recorded in the manifest -> a path on this machine."""
        path = Path(recorded)
        return path if path.is_absolute() else self.root / path

    def record(self, path) -> str:
        """How the manifest records ``path``: relative when inside the folder, else absolute."""
        path = Path(os.path.abspath(path))
        root = Path(os.path.abspath(self.root))
        try:
            return PurePosixPath(path.relative_to(root)).as_posix()
        except ValueError:
            return str(path)

    # --- slides
    def slide(self, slide_id: str) -> SlideEntry:
        for entry in self.slides:
            if entry.id == slide_id:
                return entry
        known = ", ".join(s.id for s in self.slides) or "none"
        raise HubmapInputError(self.manifest_path, f"no slide {slide_id!r} in the project (slides: {known})")

    def working_shape(self, slide_id: str) -> tuple[int, int]:
        """(H, W) of the slide at the working scale: ceil(full / downscale), as maps and labels use."""
        return working_shape_of(self.slide(slide_id).shape, self.downscale)

    # --- persistence
    @classmethod
    def open(cls, root, *, verify: bool = True) -> "Project":
        """Read ``root/project.json`` (and ``review.json``) strictly; ``verify`` also checks that every
        slide, map and project file exists and every slide's hash matches. Never writes."""
        root = Path(root)
        path = root / MANIFEST
        if not root.is_dir():
            raise HubmapInputError(root, "not a project folder (not found)" if not root.exists() else "not a folder")
        if not path.is_file():
            raise HubmapInputError(path, "not found: not a napari-hubmap project (run `napari-hubmap project init`)")
        project = _parse(root, path, load_json(path, "project manifest"))
        from .review import ReviewState

        project.review = ReviewState.load(project)
        if verify:
            verify_files(project)
        return project

    def save(self) -> None:
        """Write the manifest atomically (temporary file, fsync, rename)."""
        self.modified = now_iso()
        write_text_atomic(self.manifest_path, json.dumps(self.as_dict(), indent=2) + "\n")

    def as_dict(self) -> dict:
        return {
            "kind": KIND,
            "format_version": FORMAT_VERSION,
            "created": self.created,
            "modified": self.modified,
            "tiles": {"size": self.tile_size, "downscale": self.downscale},
            "models": self.models,
            "slides": [s.as_dict() for s in self.slides],
        }


# ----------------------------------------------------------------------------------------------- parsing


_UNSET = object()


class _Fields:
    """Typed field access on a JSON object, naming ``where`` (e.g. ``slides[2].path``) in errors."""

    def __init__(self, manifest: Path, root: Path, data, where: str):
        self.manifest, self.root, self.where = manifest, root, where
        if not isinstance(data, dict):
            self.fail(f"{where or 'the manifest'} must be a JSON object, got {type(data).__name__}")
        self.data = data

    def fail(self, problem: str):
        raise HubmapInputError(self.manifest, problem)

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, types, *, optional: bool = False, default=None):
        if key not in self.data or (optional and self.data[key] is None):
            if optional:
                return default
            self.fail(f"missing field {self.name(key)}")
        value = self.data[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            self.fail(f"{self.name(key)} must be {_type_names(types)}, got {value!r}")
        if not isinstance(value, types):
            self.fail(f"{self.name(key)} must be {_type_names(types)}, got {type(value).__name__} {_short(value)}")
        return value

    def number(self, key: str, rule: str, within, *, optional: bool = False, default=None) -> float | None:
        """A finite number (a float) for which ``within`` holds, ``rule`` saying which ("> 0"); NaN, infinity
        and ints too big for a float are refused."""
        value = self.get(key, (int, float), optional=optional, default=default)
        if value is None:
            return None
        number = _finite_float(value)
        if number is None or not within(number):
            self.fail(f"{self.name(key)} must be a finite number {rule}, got {_short(value)}")
        return number

    def whole(self, key: str, *, low: int = 0, optional: bool = False, default=None):
        """A whole number >= ``low``."""
        value = self.get(key, int, optional=optional, default=default)
        if value is not None and value < low:
            self.fail(f"{self.name(key)} must be a whole number >= {low}, got {_short(value)}")
        return value

    def sub(self, key: str, value=_UNSET, index: int | None = None) -> "_Fields":
        name = self.name(key) + (f"[{index}]" if index is not None else "")
        if value is _UNSET:
            if key not in self.data:
                self.fail(f"missing field {name}")
            value = self.data[key]
        return _Fields(self.manifest, self.root, value, name)

    def inside(self, key: str, *, optional: bool = False) -> str | None:
        """A path the project owns: relative, normalised, inside the folder."""
        value = self.get(key, str, optional=optional)
        if value is None:
            return None
        check_inside(self.root, value, self.manifest, self.name(key))
        return value

    def external(self, key: str) -> str:
        """A path to a file the project refers to: absolute, or relative and inside the folder."""
        value = self.get(key, str)
        if not value:
            self.fail(f"{self.name(key)} is empty")
        if not Path(value).is_absolute():
            check_inside(self.root, value, self.manifest, self.name(key))
        return value


def _finite_float(value) -> float | None:
    """``value`` (an int or float) as a float, None when it is NaN, infinite or too big for a float."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _short(value) -> str:
    """``repr(value)``, cut to 60 characters (a 400-digit number, a long list)."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def check_inside(root: Path, value: str, manifest: Path, name: str) -> None:
    """Refuse a recorded path that is absolute or escapes ``root`` (also through a symlink)."""
    if not value:
        raise HubmapInputError(manifest, f"{name} is empty")
    pure = PurePosixPath(value.replace("\\", "/"))
    if pure.is_absolute() or Path(value).is_absolute() or re.match(r"^[A-Za-z]:", value):
        raise HubmapInputError(manifest, f"{name} {value!r} must be a path inside the project folder, not absolute")
    if ".." in pure.parts:
        raise HubmapInputError(manifest, f"{name} {value!r} escapes the project folder {root}")
    resolved = (root / pure).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise HubmapInputError(manifest, f"{name} {value!r} escapes the project folder {root} (it resolves to {resolved})")


def _type_names(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {str: "a string", int: "a whole number", float: "a number", list: "a list", dict: "an object", bool: "true/false"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _parse(root: Path, manifest: Path, data) -> Project:
    top = _Fields(manifest, root, data, "")
    kind = top.get("kind", str)
    if kind != KIND:
        top.fail(f"kind is {kind!r}, not {KIND!r}: not a napari-hubmap project manifest")
    version = top.get("format_version", int)
    if version > FORMAT_VERSION:
        top.fail(f"format_version {_short(version)} was written by a newer napari-hubmap; this version reads up to "
                 f"{FORMAT_VERSION} (upgrade napari-hubmap; nothing was changed)")
    if version < 1:
        top.fail(f"format_version must be >= 1, got {version}")
    tiles = top.sub("tiles")
    size = tiles.whole("size", low=16)
    downscale = tiles.number("downscale", ">= 1", lambda v: v >= 1)
    models = top.get("models", list, optional=True, default=[])
    slides_raw = top.get("slides", list)
    slides: list[SlideEntry] = []
    seen: set[str] = set()
    for index, raw in enumerate(slides_raw):
        entry = _parse_slide(top.sub("slides", raw, index))
        if entry.id in seen:
            top.fail(f"slides[{index}].id {entry.id!r} appears twice")
        seen.add(entry.id)
        slides.append(entry)
    return Project(root=root, tile_size=size, downscale=downscale, slides=slides, models=list(models),
                   created=top.get("created", str, optional=True, default=""),
                   modified=top.get("modified", str, optional=True, default=""), format_version=version)


def _parse_slide(f: _Fields) -> SlideEntry:
    slide_id = f.get("id", str)
    if not SLIDE_ID.fullmatch(slide_id):
        f.fail(f"{f.name('id')} {slide_id!r} must be letters, digits, '.', '_' or '-' (at most 128)")
    h = f.sub("hash")
    algorithm = h.get("algorithm", str)
    if algorithm not in (FULL_HASH, QUICK_HASH):
        h.fail(f"{h.name('algorithm')} {algorithm!r} is not {FULL_HASH!r} or {QUICK_HASH!r}")
    file_hash_ = FileHash(algorithm, h.get("value", str), h.whole("size"))
    shape = f.get("shape", list)
    if len(shape) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in shape):
        f.fail(f"{f.name('shape')} must be [height, width] (whole numbers from 1 to {MAX_SIDE}), got {_short(shape)}")
    mpp = f.number("mpp", "> 0 (µm/px)", lambda v: v > 0, optional=True)
    mpp_source = f.get("mpp_source", str, optional=True, default=None if mpp is None else "file")
    if mpp_source not in (None, "option", "file") or (mpp_source is None) != (mpp is None):
        f.fail(f"{f.name('mpp_source')} must be 'option' or 'file' with a µm/px, null without, got {mpp_source!r}")
    mpp_file = f.number("mpp_file", "> 0 (µm/px)", lambda v: v > 0, optional=True,
                        default=mpp if mpp_source == "file" else None)
    gt = None
    if f.data.get("ground_truth") is not None:
        g = f.sub("ground_truth")
        gt = GroundTruth(file=g.inside("file"), original=g.get("original", str), sha256=g.get("sha256", str),
                         labels=g.inside("labels"), objects=g.whole("objects"),
                         rle_id=g.get("rle_id", str, optional=True),
                         median_area=g.number("median_area", ">= 0", lambda v: v >= 0, optional=True))
    predictions = []
    for index, raw in enumerate(f.get("predictions", list, optional=True, default=[])):
        p = f.sub("predictions", raw, index)
        threshold = p.number("threshold", "in [0, 1]", lambda v: 0 <= v <= 1)
        level = p.whole("level", optional=True, default=0)
        predictions.append(PredictionEntry(
            path=p.external("path"), level=level, threshold=threshold,
            models=p.get("models", list, optional=True, default=[]), pseudo_labels=p.inside("pseudo_labels", optional=True),
            postprocess=p.get("postprocess", dict, optional=True),
        ))
    return SlideEntry(id=slide_id, path=f.external("path"), hash=file_hash_, shape=(shape[0], shape[1]),
                      mpp=mpp, ground_truth=gt, predictions=predictions,
                      edits=f.inside("edits"), added=f.get("added", str, optional=True, default=""),
                      mpp_source=mpp_source, mpp_file=mpp_file)


# ----------------------------------------------------------------------------------------------- checks


def verify_files(project: Project) -> None:
    """Every slide and map exists, every slide's hash matches, every project-owned store exists."""
    for entry in project.slides:
        verify_slide(project, entry)
        if entry.ground_truth is not None:
            gt = entry.ground_truth
            for recorded in (gt.file, gt.labels):
                if not project.resolve(recorded).exists():
                    raise HubmapInputError(project.resolve(recorded), f"ground truth of slide {entry.id!r} is missing "
                                           f"(listed in {project.manifest_path})")
            copy = project.resolve(gt.file)
            if copy.is_file() and sha256_file(copy) != gt.sha256:
                raise HubmapInputError(copy, f"ground truth of slide {entry.id!r} changed since it was imported "
                                       "(sha256 differs from the manifest)")
        for prediction in entry.predictions:
            for recorded in (prediction.path, prediction.pseudo_labels):
                if recorded and not project.resolve(recorded).exists():
                    raise HubmapInputError(project.resolve(recorded), f"prediction of slide {entry.id!r} is missing "
                                           f"(listed in {project.manifest_path})")


def verify_slide(project: Project, entry: SlideEntry) -> None:
    path = project.resolve(entry.path)
    if not path.is_file():
        raise HubmapInputError(path, f"slide {entry.id!r} not found (listed in {project.manifest_path})")
    size = path.stat().st_size
    if size != entry.hash.size:
        raise HubmapInputError(path, f"slide {entry.id!r} changed since it was added: {size} bytes, the manifest "
                               f"records {entry.hash.size}")
    now = file_hash(path, algorithm=entry.hash.algorithm)
    if now.value != entry.hash.value:
        raise HubmapInputError(path, f"slide {entry.id!r} changed since it was added: {entry.hash.algorithm} is "
                               f"{now.value[:12]}..., the manifest records {entry.hash.value[:12]}...")

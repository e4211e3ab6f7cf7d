"""Training images and their glomerulus masks, read once at the model's working scale.

A data folder holds ``images/`` and either ``annotations/`` (QuPath/HuBMAP GeoJSON or LabelMe JSON
polygons, one file per image stem; a label filter keeps some classes; a LabelMe file's recorded image
size must be its image's) or ``masks/`` (binary, 0/1, 0/255, RGB-coloured or label masks, same stem). A
folder whose sub-folders are such folders (like ``shared/data``) gives each of them as a source. A curation
project folder (``project.json``) gives its training set: every tile not dropped, with the labels its
review state names. Each image belongs to a *group* (patient or slide: the file stem up to the first
``_``, or the project's slide id), which the validation split keeps together.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..defaults import DEFAULT_MPP  # µm/px assumed for a folder without one (as for a slide without one)
from ..errors import HubmapInputError
from ..jsonio import load_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
ANNOTATION_SUFFIXES = (".geojson", ".json")
DATASET_FILE = "dataset.json"
"""Optional, in a data folder: {"mpp": 0.45, "stain": "H&E"}."""


@dataclass
class Sample:
    """One training image at the working scale."""

    name: str  # "<source>/<stem>" or "<slide>/<tile>"
    group: str  # patient or slide: the validation split keeps a group together
    source: str
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8, 1 = glomerulus
    stain: str = ""

    @property
    def positives(self) -> int:
        return int(self.mask.sum())


def group_of(stem: str) -> str:
    """``C003_region4`` -> ``C003``; a stem without ``_`` is its own group."""
    return stem.split("_", 1)[0]


def scale_factor(source_mpp: float | None, target_mpp: float | None, downscale: float) -> float:
    """How much to shrink a source's images: to ``target_mpp`` when both are known, else ``downscale``."""
    if target_mpp is not None and source_mpp:
        return float(target_mpp) / float(source_mpp)
    return float(downscale)


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    if image.shape[:2] == tuple(shape):
        return image
    shrinking = shape[0] < image.shape[0]
    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area-weighted: a working pixel is foreground when at least half of what it covers is."""
    if mask.shape == tuple(shape):
        return mask.astype(np.uint8)
    import cv2

    shrinking = shape[0] < mask.shape[0]
    resized = cv2.resize(mask.astype(np.float32), (shape[1], shape[0]),
                         interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return (resized >= 0.5).astype(np.uint8)


def working_shape(shape, factor: float) -> tuple[int, int]:
    return max(1, round(shape[0] / factor)), max(1, round(shape[1] / factor))


def read_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 (alpha dropped, grey repeated)."""
    from ..slide import open_slide

    try:
        with open_slide(path) as slide:
            level = slide.levels[0]
            return np.ascontiguousarray(level[:, :])
    except HubmapInputError:
        raise
    except Exception as error:
        raise HubmapInputError(path, f"cannot read the image: {type(error).__name__}: {error}") from None


def is_data_folder(path: Path) -> bool:
    return (path / "images").is_dir() and ((path / "annotations").is_dir() or (path / "masks").is_dir())


def is_project_folder(path: Path) -> bool:
    from ..project.manifest import MANIFEST

    return (path / MANIFEST).is_file()


def data_folders(path: str | os.PathLike) -> list[Path]:
    """The data folders ``path`` stands for: itself, or its data sub-folders."""
    path = Path(path)
    if not path.is_dir():
        raise HubmapInputError(path, "training data folder not found")
    if is_data_folder(path) or is_project_folder(path):
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_dir() and (is_data_folder(p) or is_project_folder(p)))
    if not found:
        raise HubmapInputError(path, "holds no training data: expected images/ with annotations/ or masks/, "
                                     "sub-folders of that kind, or a curation project (project.json)")
    return found


def folder_settings(folder: Path, mpp_overrides: dict[str, float]) -> tuple[float, str]:
    """(µm per pixel, stain) of a data folder: ``--mpp NAME=VALUE``, else its dataset.json, else 0.5."""
    info: dict = {}
    if (folder / DATASET_FILE).is_file():
        info = load_json(folder / DATASET_FILE, "dataset description")
        if not isinstance(info, dict):
            raise HubmapInputError(folder / DATASET_FILE, 'expected a JSON object ({"mpp": ..., "stain": ...})')
    mpp = mpp_overrides.get(folder.name, info.get("mpp", DEFAULT_MPP))
    if not isinstance(mpp, (int, float)) or not mpp > 0:
        raise HubmapInputError(folder, f"µm per pixel must be a number > 0, got {mpp!r}")
    return float(mpp), str(info.get("stain", ""))


def _label_file(folder: Path, stem: str) -> Path | None:
    for sub, suffixes in (("annotations", ANNOTATION_SUFFIXES), ("masks", IMAGE_SUFFIXES)):
        for suffix in suffixes:
            candidate = folder / sub / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _mask_at(label_file: Path, full_shape, shape, factor: float, labels=None) -> np.ndarray:
    from ..annotations.geojson import rasterize, read_annotation_file
    from ..annotations.labelme import check_image_size
    from ..annotations.masks import read_mask

    if label_file.suffix.lower() in ANNOTATION_SUFFIXES:
        read = read_annotation_file(label_file, labels)
        check_image_size(label_file, read.image_shape, full_shape)
        return (rasterize(read.annotations, shape, downsample=factor) > 0).astype(np.uint8)
    mask = read_mask(label_file) != 0
    if mask.shape != tuple(full_shape):
        raise HubmapInputError(label_file, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                                           f"{full_shape[1]}x{full_shape[0]}")
    return resize_mask(mask, shape)


def folder_samples(folder: Path, *, factor_of, mpp_overrides: dict[str, float], labels=None) -> list[Sample]:
    """Every image of a data folder with its mask; an image without labels is a clear error.

    An image's µm/px is ``mpp_overrides["<folder>/<stem>"]`` when given (regions exported at different
    zooms), else its folder's. ``labels`` (class names) keeps only those annotations (None: all)."""
    folder_mpp, stain = folder_settings(folder, mpp_overrides)
    images = sorted(p for p in (folder / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise HubmapInputError(folder / "images", "holds no images (.png, .jpg, .tif)")
    out = []
    for path in images:
        label_file = _label_file(folder, path.stem)
        if label_file is None:
            raise HubmapInputError(path, "has no annotations/<stem>.geojson (or .json) or masks/<stem>.png beside it")
        factor = factor_of(mpp_overrides.get(f"{folder.name}/{path.stem}", folder_mpp))
        full = read_rgb(path)
        shape = working_shape(full.shape[:2], factor)
        mask = _mask_at(label_file, full.shape[:2], shape, factor, labels)
        out.append(Sample(f"{folder.name}/{path.stem}", group_of(path.stem), folder.name,
                          resize_image(full, shape), mask, stain))
    return out


def project_samples(folder: Path, *, factor_of) -> list[Sample]:
    """The training tiles of a curation project (dropped tiles are not in its training set)."""
    from ..project.dataset import read_tile_labels, training_set
    from ..project.manifest import Project

    project = Project.open(folder)
    out = []
    slides: dict = {}
    for item in training_set(project):
        slide = slides.get(item.slide) or slides.setdefault(item.slide, _open_project_slide(project, item.slide))
        labels = read_tile_labels(project, item) != 0
        y0, x0, y1, x1 = item.box
        d = project.downscale
        factor = factor_of(slide.mpp)  # the slide's µm/px, else the model's downscale
        full_box = (round(y0 * d), round(x0 * d), round(y1 * d), round(x1 * d))
        shape = working_shape((full_box[2] - full_box[0], full_box[3] - full_box[1]), factor)
        image = _read_region(slide, full_box, shape)
        out.append(Sample(f"{item.slide}/{item.tile}", item.slide, folder.name, image, resize_mask(labels, shape)))
    for slide in slides.values():
        slide.close()
    if not out:
        raise HubmapInputError(folder, "the project's training set is empty (no ground truth, accepted or corrected tiles)")
    return out


def _open_project_slide(project, slide_id: str):
    from ..slide import open_slide

    entry = project.slide(slide_id)
    return open_slide(project.resolve(entry.path), mpp=entry.given_mpp)  # a µm/px given at add-slide wins


def _read_region(slide, box, shape) -> np.ndarray:
    """A full-resolution box of a slide at ``shape``, read from the finest level coarse enough."""
    y0, x0, y1, x1 = box
    wanted = (y1 - y0) / shape[0]
    index = max([i for i, d in enumerate(slide.downsamples) if d <= wanted + 1e-6] or [0])
    d = slide.downsamples[index]
    level = slide.levels[index]
    region = level[int(y0 / d):max(int(y0 / d) + 1, round(y1 / d)), int(x0 / d):max(int(x0 / d) + 1, round(x1 / d))]
    return resize_image(np.ascontiguousarray(region), shape)


def synthetic_samples(count: int, *, factor_of, size: int = 2048, seed: int = 1000) -> list[Sample]:
    """Synthetic PAS and H&E regions (the project's own generator), for the demo slides' look."""
    from ..synth import sample_spec
    from ..synth.render import ground_truth_labels, render_region

    out = []
    for i in range(count):
        stain = ("pas", "he")[i % 2]
        spec = sample_spec((size, size), seed=seed + i, stain=stain)
        factor = max(1, round(factor_of(spec.mpp)))
        image = render_region(spec, 0, size, 0, size, downsample=factor)
        labels = ground_truth_labels(spec, 0, size, 0, size, downsample=factor)
        out.append(Sample(f"synthetic/{stain}-{seed + i}", f"synthetic-{seed + i}", "synthetic", image,
                          (labels > 0).astype(np.uint8), stain.upper()))
    return out


def load_sources(paths, *, downscale: float, target_mpp: float | None, mpp_overrides: dict[str, float] | None = None,
                 synthetic: int = 0, labels=None) -> list[Sample]:
    """All samples of the given data folders / projects (and ``synthetic`` generated regions).

    ``labels`` filters the annotation files of data folders by class name (None: every class)."""
    mpp_overrides = dict(mpp_overrides or {})

    def factor_of(mpp):
        return scale_factor(mpp, target_mpp, downscale)

    samples: list[Sample] = []
    for path in paths:
        for folder in data_folders(path):
            if is_project_folder(folder):
                samples += project_samples(folder, factor_of=factor_of)
            else:
                samples += folder_samples(folder, factor_of=factor_of, mpp_overrides=mpp_overrides, labels=labels)
    if synthetic:
        samples += synthetic_samples(synthetic, factor_of=factor_of)
    if not samples:
        raise HubmapInputError(None, "no training data given")
    return samples


def manifest_hash(samples: list[Sample]) -> str:
    """sha256 over every sample's name, group and pixels: the card's record of what was learnt from."""
    digest = hashlib.sha256()
    for s in sorted(samples, key=lambda s: s.name):
        digest.update(f"{s.name}\0{s.group}\0{s.image.shape}\0".encode())
        digest.update(np.ascontiguousarray(s.image).tobytes())
        digest.update(np.ascontiguousarray(s.mask).tobytes())
    return digest.hexdigest()


def describe(samples: list[Sample]) -> dict:
    """Per source: images, groups, glomerulus pixels (for the card's training_data)."""
    out: dict = {}
    for s in samples:
        entry = out.setdefault(s.source, {"images": 0, "groups": set(), "stain": s.stain, "pixels": 0})
        entry["images"] += 1
        entry["groups"].add(s.group)
        entry["pixels"] += int(s.image.shape[0] * s.image.shape[1])
    return {k: {**v, "groups": sorted(v["groups"])} for k, v in out.items()}

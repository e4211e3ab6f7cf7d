"""Annotations core: Kaggle RLE, QuPath/HuBMAP polygon GeoJSON, mask images, and conversions.

Imports neither Qt nor napari.
"""

from .convert import TARGETS, convert_annotations, load_labels, parse_shape
from .geojson import (
    Annotation,
    annotations_to_feature_collection,
    labels_to_feature_collection,
    pixel_outline,
    rasterize,
    read_annotations,
    write_geojson,
)
from .masks import MASK_SUFFIXES, read_mask, write_mask
from .rle import ENCODING_COLUMNS, read_rle_csv, rle_decode, rle_encode, write_rle_csv

__all__ = [
    "Annotation",
    "ENCODING_COLUMNS",
    "MASK_SUFFIXES",
    "TARGETS",
    "annotations_to_feature_collection",
    "convert_annotations",
    "load_labels",
    "labels_to_feature_collection",
    "parse_shape",
    "pixel_outline",
    "rasterize",
    "read_annotations",
    "read_mask",
    "read_rle_csv",
    "rle_decode",
    "rle_encode",
    "write_geojson",
    "write_mask",
    "write_rle_csv",
]

"""Annotations core: Kaggle RLE, QuPath/HuBMAP polygon GeoJSON, LabelMe JSON, mask images, and conversions.

Imports neither Qt nor napari.
"""

from .convert import TARGETS, convert_annotations, load_labels, parse_shape
from .geojson import (
    Annotation,
    AnnotationFile,
    annotations_to_feature_collection,
    labels_to_feature_collection,
    pixel_outline,
    rasterize,
    read_annotation_file,
    read_annotations,
    write_geojson,
)
from .labelme import check_image_size
from .masks import MASK_SUFFIXES, read_mask, write_mask
from .rle import ENCODING_COLUMNS, read_rle_csv, rle_decode, rle_encode, write_rle_csv

__all__ = [
    "Annotation",
    "AnnotationFile",
    "ENCODING_COLUMNS",
    "MASK_SUFFIXES",
    "TARGETS",
    "annotations_to_feature_collection",
    "check_image_size",
    "convert_annotations",
    "load_labels",
    "labels_to_feature_collection",
    "parse_shape",
    "pixel_outline",
    "rasterize",
    "read_annotation_file",
    "read_annotations",
    "read_mask",
    "read_rle_csv",
    "rle_decode",
    "rle_encode",
    "write_geojson",
    "write_mask",
    "write_rle_csv",
]

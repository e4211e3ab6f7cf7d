"""Int8 ONNX graphs for the CPU: a model's cached float graph quantised once, statically, and cached beside it.

The ``onnx-int8`` backend (never chosen by ``auto``: it trades a little accuracy for speed) runs
:func:`int8_graph`: ONNX Runtime's static quantisation (QDQ format, unsigned 8-bit activations, signed
8-bit per-channel weights, min-max ranges) of the float graph :func:`~.onnx_backend.onnx_graph` exports,
calibrated on fixed tiles that ship with the package: crops of the real HuBMAP PAS sample tile at the
model's working scale, and one synthetic PAS and one synthetic H&E tile (:func:`calibration_tiles`). The
same model therefore always gets the same int8 graph. Like the float graph it is written under a temporary
name and renamed, keyed by the float graph's SHA-256 and :data:`QUANTIZER`, and a record beside it holds its
own SHA-256: a stale, truncated or corrupt int8 graph is rebuilt, never trusted. On CPUs with VNNI
(AVX512-VNNI, AVX-VNNI) a whole slide ran 1.34x faster than with the float graph (1.90x torch); its speed and
how far its maps move are measured in ``benchmarks/bench_inference.py`` (part d).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..errors import HubmapInputError

QUANTIZER_VERSION = "qdq-u8s8-perchannel-minmax-v1"
"""How a graph is quantised and calibrated; with ONNX Runtime's version, part of its cache key."""
CALIBRATION_CROPS = 4
"""Crops of the HuBMAP sample tile (its four corners), besides one synthetic PAS and one H&E tile."""


def quantizer() -> str:
    import onnxruntime

    return f"ort-{onnxruntime.__version__}-{QUANTIZER_VERSION}"


def int8_path(float_graph: Path) -> Path:
    return float_graph.with_name(f"{float_graph.stem}-int8.onnx")


def calibration_tiles(card) -> list[np.ndarray]:
    """(1, C, tile, tile) float32 inputs, normalised as the card says, at the model's working scale."""
    from PIL import Image

    from ..registry.card import stain_reference_of
    from ..sample_data import HUBMAP_TILE, HUBMAP_TILE_MPP
    from ..stain_standard import standardise, tissue_stats
    from ..synth import sample_image
    from .normalisation import normalise

    tile = int(card.tile)
    with Image.open(HUBMAP_TILE) as opened:
        rgb = opened.convert("RGB")
        factor = card.working_downscale(HUBMAP_TILE_MPP)
        size = (max(tile, round(rgb.width / factor)), max(tile, round(rgb.height / factor)))
        real = np.asarray(rgb.resize(size, Image.Resampling.BOX))
    height, width = real.shape[:2]
    corners = [(0, 0), (0, width - tile), (height - tile, 0), (height - tile, width - tile)]
    images = [real[y:y + tile, x:x + tile] for y, x in corners[:CALIBRATION_CROPS]]
    images += [sample_image((tile, tile), seed=1, stain=stain)[0] for stain in ("pas", "he")]
    reference = stain_reference_of(card)
    images = [standardise(image, tissue_stats(image), reference) for image in images]  # as the engine feeds them
    return [np.ascontiguousarray(tile) for tile in normalise(np.stack(images), card.normalization)[:, None]]


def quantise_graph(float_graph: Path, target: Path, tiles: list[np.ndarray]) -> None:
    """Write the statically quantised ``float_graph`` to ``target`` (atomically), then its record."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..atomic import atomic_path, write_text_atomic
    from ..registry.weights import sha256_file
    from .graph_records import INPUT, record_path

    class Tiles(CalibrationDataReader):
        def __init__(self):
            self.left = iter(tiles)

        def get_next(self):
            tile = next(self.left, None)
            return None if tile is None else {INPUT: tile}

    with tempfile.TemporaryDirectory(prefix="napari-hubmap-int8-") as work, atomic_path(target) as tmp:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(float_graph), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(tmp), Tiles(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        record = {"source_sha256": sha256_file(float_graph), "quantizer": quantizer(), "onnx_sha256": sha256_file(tmp)}
        write_text_atomic(record_path(target), json.dumps(record))


def _trusted(graph: Path, source_sha256: str) -> bool:
    from .graph_records import record_matches

    return record_matches(graph, source_sha256=source_sha256, quantizer=quantizer())


def int8_graph(model, float_graph: Path) -> Path:
    """The cached int8 graph of ``model``, made first when missing, stale or corrupt. ``float_graph`` is the
    model's float graph as :func:`~.onnx_backend.onnx_graph` returned it (its record just checked, so its
    SHA-256 is read from there, not computed again). Off the main thread (a viewer's worker) a registry model
    is quantised in a child process, as the float graph is exported: calibration holds the GIL for seconds."""
    from .graph_records import made_in_child, recorded_sha256, run_in_child

    target = int8_path(float_graph)
    if _trusted(target, recorded_sha256(float_graph)):
        return target
    try:
        if made_in_child(model):
            run_in_child("napari_hubmap.inference.int8", [model.path, float_graph, target], Path(model.path),
                         f"cannot quantise model {model.card.name!r} to int8")
        else:
            quantise_graph(float_graph, target, calibration_tiles(model.card))
    except OSError as error:
        raise HubmapInputError(target.parent, f"cannot write the int8 graph of model {model.card.name!r}: "
                               f"{error.strerror or error}") from None
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m napari_hubmap.inference.int8 MODEL_FOLDER FLOAT_GRAPH INT8_GRAPH``: quantise one model."""
    from ..registry import read_card

    folder, float_graph, target = argv or sys.argv[1:]
    quantise_graph(Path(float_graph), Path(target), calibration_tiles(read_card(folder)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

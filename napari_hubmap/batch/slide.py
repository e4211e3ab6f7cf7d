"""One slide of a cohort, as a worker runs it: predict (resuming), post-process, export, then its record."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ..errors import HubmapInputError
from ..inference.config import InferenceConfig
from ..postprocess.config import PostprocessConfig
from ..progress import Cancelled, ProgressCallback
from ..stores.naming import labels_path, probability_path, slide_stem
from .config import CohortConfig, done_path, export_path

_MODELS: dict = {}
_MODELS_LOCK = threading.Lock()


def worker_models(inference: InferenceConfig) -> list:
    """The ensemble, loaded once per process (a Dask worker keeps it between slides)."""
    from ..inference.engine import pick_device
    from ..inference.onnx_backend import onnx_model, resolve_backend
    from ..registry import load_model

    device = pick_device(inference.device)
    backend = resolve_backend(inference.backend, device)
    key = (tuple(str(m) for m in inference.models), str(device), backend)
    with _MODELS_LOCK:
        if key not in _MODELS:
            models = [load_model(m, device=str(device)) for m in inference.models]
            _MODELS[key] = [onnx_model(m) for m in models] if backend == "onnx" else models
        return _MODELS[key]


def process_slide(slide, out_dir, config: CohortConfig, progress: ProgressCallback | None = None) -> dict:
    """Predict, post-process and export one slide into ``out_dir``; its result line (``error`` on failure)."""
    slide, out_dir = str(slide), Path(out_dir)
    line = {"slide": slide, "stem": slide_stem(slide)}
    record = done_path(slide, out_dir)
    previous = _read_record(record)
    if previous.get("key") == config.key():
        return {**previous["line"], "skipped": True}
    try:
        line.update(_process(slide, out_dir, config, progress))
    except Cancelled:
        raise
    except (HubmapInputError, OSError, ValueError) as error:
        return {**line, "error": str(error)}
    from ..atomic import write_text_atomic

    write_text_atomic(record, json.dumps({"key": config.key(), "line": line}))
    return {**line, "skipped": False}


def _process(slide: str, out_dir: Path, config: CohortConfig, progress) -> dict:
    from ..inference import predict_slide
    from ..postprocess import postprocess_slide

    out_dir.mkdir(parents=True, exist_ok=True)
    prob = probability_path(slide, out_dir)
    predicted = predict_slide(slide, prob, config.inference, progress=progress, models=worker_models(config.inference))
    labels = labels_path(slide_stem(slide), out_dir)
    post = postprocess_slide(prob, labels, postprocess_config(prob, config.postprocess))
    exports = {fmt: str(_export(labels, slide, out_dir, fmt)) for fmt in config.exports}
    return {"prob": str(prob), "labels": str(labels), "objects": post.objects, "tiles": predicted.tiles,
            "computed_tiles": predicted.computed, "backend": predicted.backend, "exports": exports}


def postprocess_config(prob: Path, settings: dict) -> PostprocessConfig:
    """``settings`` over the threshold and minimum size the map's models record (else the defaults)."""
    from ..postprocess.slide import recorded_min_size, recorded_threshold
    from ..stores.probability import open_probability

    meta = open_probability(prob)[1]
    threshold = recorded_threshold(meta)
    recorded = {"threshold": PostprocessConfig.threshold if threshold is None else threshold,
                "min_size": recorded_min_size(meta)}
    return PostprocessConfig(**{**recorded, **settings})


def _export(labels: Path, slide: str, out_dir: Path, fmt: str) -> Path:
    from ..postprocess.export import export_labels

    out = export_path(slide, out_dir, fmt)
    export_labels(labels, fmt, out, rle_id=slide_stem(slide))
    return out


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and isinstance(record.get("line"), dict) else {}



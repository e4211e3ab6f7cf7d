"""One slide of a cohort, as a worker runs it: predict (resuming), post-process, export, then its record."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ..errors import HubmapInputError
from ..jsonio import load_json
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
    from ..inference.onnx_backend import resolve_backend, runtime_models
    from ..registry import load_model

    device = pick_device(inference.device)
    backend = resolve_backend(inference.backend, device)
    key = (tuple(str(m) for m in inference.models), str(device), backend)
    with _MODELS_LOCK:
        if key not in _MODELS:
            models = [load_model(m, device=str(device)) for m in inference.models]
            _MODELS[key] = runtime_models(models, backend)
        return _MODELS[key]


def process_slide(slide, out_dir, config: CohortConfig, progress: ProgressCallback | None = None) -> dict:
    """Predict, post-process and export one slide into ``out_dir``; its result line (``error`` on failure)."""
    slide, out_dir = str(slide), Path(out_dir)
    return finished_line(slide, out_dir, config) or _guarded(slide, out_dir, config, _whole, progress)


def finished_line(slide: str, out_dir: Path, config: CohortConfig) -> dict | None:
    """The line of a slide already done with these settings (its record), else None."""
    previous = _read_record(done_path(slide, out_dir))
    return {**previous["line"], "skipped": True} if previous.get("key") == config.key() else None


def _guarded(slide: str, out_dir: Path, config: CohortConfig, work, *args) -> dict:
    """``work``'s line; a slide's own problem (bad file, full disk) becomes its ``error``; the record last."""
    line = {"slide": slide, "stem": slide_stem(slide)}
    try:
        line.update(work(slide, out_dir, config, *args))
    except Cancelled:
        raise
    except (HubmapInputError, OSError, ValueError) as error:
        return {**line, "error": str(error)}
    from ..atomic import write_text_atomic

    write_text_atomic(done_path(slide, out_dir), json.dumps({"key": config.key(), "line": line}))
    return {**line, "skipped": False}


def _whole(slide: str, out_dir: Path, config: CohortConfig, progress) -> dict:
    from ..inference import predict_slide

    out_dir.mkdir(parents=True, exist_ok=True)
    prob = probability_path(slide, out_dir)
    predicted = predict_slide(slide, prob, config.inference, progress=progress, models=worker_models(config.inference))
    return {**_after_prediction(slide, out_dir, config), "tiles": predicted.tiles, "computed_tiles": predicted.computed,
            "backend": predicted.backend}


def _after_prediction(slide: str, out_dir: Path, config: CohortConfig) -> dict:
    from ..postprocess import postprocess_slide

    prob = probability_path(slide, out_dir)
    labels = labels_path(slide_stem(slide), out_dir)
    post = postprocess_slide(prob, labels, postprocess_config(prob, config.postprocess))
    exports = {fmt: str(_export(labels, slide, out_dir, fmt)) for fmt in config.exports}
    return {"prob": str(prob), "labels": str(labels), "objects": post.objects, "exports": exports}


# --- a slide shared by several workers: prepare, bands, finish -----------------------------------


def prepare_slide(slide, out_dir, config: CohortConfig) -> dict:
    """``{"line": ...}`` when the slide is done (or failed), else ``{"bands": [(first, end), ...]}``."""
    from ..inference.engine import prepare_bands

    slide, out_dir = str(slide), Path(out_dir)
    done = finished_line(slide, out_dir, config)
    if done:
        return {"line": done}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        bands = prepare_bands(slide, probability_path(slide, out_dir), config.inference, config.band_rows,
                              models=worker_models(config.inference))
    except (HubmapInputError, OSError, ValueError) as error:
        return {"line": {"slide": slide, "stem": slide_stem(slide), "error": str(error)}}
    return {"bands": bands}


def predict_band(slide, out_dir, config: CohortConfig, band: tuple[int, int], progress=None) -> dict:
    """One band of the slide's map (done whole, or not at all); its tile counts."""
    from ..inference import predict_slide

    result = predict_slide(str(slide), probability_path(slide, out_dir), config.inference, progress=progress,
                           models=worker_models(config.inference), band=tuple(band))
    return {"tiles": result.tiles, "computed_tiles": result.computed, "backend": result.backend}


def finish_slide(slide, out_dir, config: CohortConfig, bands: list, band_results: list) -> dict:
    """After every band: the map's lower levels, then post-processing, exports and the record."""
    def work(slide, out_dir, config):
        from ..inference.engine import finish_bands

        finish_bands(probability_path(slide, out_dir), [tuple(b) for b in bands])
        tiles = {"tiles": sum(r["tiles"] for r in band_results),
                 "computed_tiles": sum(r["computed_tiles"] for r in band_results),
                 "backend": band_results[0]["backend"] if band_results else None, "bands": len(bands)}
        return {**_after_prediction(slide, out_dir, config), **tiles}

    return _guarded(str(slide), Path(out_dir), config, work)


def postprocess_config(prob: Path, settings: dict) -> PostprocessConfig:
    """``settings`` over the threshold, minimum size and outline threshold the map's models record (else the defaults)."""
    from ..postprocess.slide import recorded_defaults
    from ..stores.probability import open_probability

    return PostprocessConfig(**{**recorded_defaults(open_probability(prob)[1]), **settings})


def _export(labels: Path, slide: str, out_dir: Path, fmt: str) -> Path:
    from ..postprocess.export import export_labels

    out = export_path(slide, out_dir, fmt)
    export_labels(labels, fmt, out, rle_id=slide_stem(slide))
    return out


def _read_record(path: Path) -> dict:
    try:
        record = load_json(path, "slide record")
    except (OSError, ValueError):  # HubmapInputError is a ValueError
        return {}
    return record if isinstance(record, dict) and isinstance(record.get("line"), dict) else {}

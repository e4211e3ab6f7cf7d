"""The onnx-int8 backend: a quantised graph (really int8), maps close to the float ones, a cache that is
rebuilt when stale or corrupt, and never chosen unless asked for."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from napari_hubmap.errors import HubmapInputError
from napari_hubmap.inference import int8
from napari_hubmap.inference.onnx_backend import OnnxModule, onnx_graph, onnx_model, resolve_backend
from napari_hubmap.registry import load_model, save_model

from test_inference import synth_slide  # noqa: F401  (fixture)
from test_onnx_backend import map_of, smp_model  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


def quantised_ops(graph: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(graph)).graph.node} & {"QuantizeLinear", "DequantizeLinear"}


def test_int8_maps_stay_close_to_the_float_ones(tmp_path, synth_slide, smp_model):  # noqa: F811
    float_result, float_map = map_of(synth_slide, tmp_path / "float.zarr", smp_model, "onnx")
    int8_result, int8_map = map_of(synth_slide, tmp_path / "int8.zarr", smp_model, "onnx-int8")
    assert (float_result.backend, int8_result.backend) == ("onnx", "onnx-int8")
    difference = np.abs(float_map - int8_map)
    assert difference.max() > 0  # the int8 graph did run: it cannot match the float one bit for bit
    assert difference.mean() <= 3 and np.percentile(difference, 99) <= 12  # grey levels of 255
    assert np.ptp(float_map) > 20


def test_the_int8_graph_is_quantised_and_cached(smp_model):  # noqa: F811
    quantised = onnx_model(smp_model, int8=True).module.graph
    assert quantised != onnx_graph(smp_model) and quantised_ops(quantised) == {"QuantizeLinear", "DequantizeLinear"}
    stamp = quantised.stat().st_mtime_ns
    assert onnx_model(smp_model, int8=True).module.graph == quantised and quantised.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("damage", ["truncate", "garbage", "record", "new float graph"])
def test_a_corrupt_or_stale_int8_graph_is_rebuilt(smp_model, damage):  # noqa: F811
    quantised = onnx_model(smp_model, int8=True).module.graph
    original = quantised.read_bytes()
    record = quantised.with_suffix(".json")
    if damage == "truncate":
        quantised.write_bytes(original[: len(original) // 2])
    elif damage == "garbage":
        quantised.write_bytes(b"\0" * len(original))
    elif damage == "record":
        record.write_text("{not json")
    else:  # made from another float graph (the source's SHA-256 in the record differs)
        record.write_text(json.dumps({**json.loads(record.read_text()), "source_sha256": "0" * 64}))
    module = onnx_model(smp_model, int8=True).module
    assert quantised.read_bytes() == original  # calibration is fixed: the same graph again
    assert json.loads(record.read_text())["onnx_sha256"] and quantised_ops(module.graph)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = torch.sigmoid(smp_model.module(x))
    assert (torch.sigmoid(module(x)) - expected).abs().mean() < 0.02


def test_new_weights_get_a_new_int8_graph(smp_model, tmp_path):  # noqa: F811
    old = onnx_model(smp_model, int8=True).module.graph
    with torch.no_grad():
        for p in smp_model.module.parameters():
            p.add_(0.05)
    changed = load_model(save_model(smp_model.module, smp_model.card, tmp_path / "models" / "tiny2"))
    assert onnx_model(changed, int8=True).module.graph != old


def test_a_model_already_run_as_a_float_graph_is_not_passed_off_as_int8(smp_model):  # noqa: F811
    as_float = onnx_model(smp_model)
    assert onnx_model(as_float) is as_float
    with pytest.raises(HubmapInputError, match="already runs as an ONNX graph"):
        onnx_model(as_float, int8=True)


def test_int8_is_asked_for_by_name_and_runs_on_the_cpu_only():
    assert resolve_backend("onnx-int8", torch.device("cpu")) == "onnx-int8"
    assert resolve_backend("auto", torch.device("cpu")) == "onnx"
    with pytest.raises(HubmapInputError, match="onnx-int8 backend runs on the CPU only"):
        resolve_backend("onnx-int8", torch.device("cuda"))


def test_calibration_tiles_follow_the_card(smp_model):  # noqa: F811
    tiles = int8.calibration_tiles(smp_model.card)
    assert len(tiles) == int8.CALIBRATION_CROPS + 2
    assert all(t.shape == (1, 3, smp_model.card.tile, smp_model.card.tile) and t.dtype == np.float32 for t in tiles)
    assert len({t.tobytes() for t in tiles}) == len(tiles) and all(abs(float(t.mean())) < 3 for t in tiles)


def test_off_the_main_thread_a_registry_model_is_quantised_in_a_child_process(smp_model, monkeypatch):  # noqa: F811
    def no_quantising_here(*args, **kwargs):
        raise AssertionError("quantised in this process")

    onnx_graph(smp_model)  # the float graph first, in this (main) thread
    monkeypatch.setattr(int8, "quantise_graph", no_quantising_here)
    found = {}
    worker = threading.Thread(target=lambda: found.update(module=onnx_model(smp_model, int8=True).module))
    worker.start()
    worker.join(120)
    assert quantised_ops(found["module"].graph)
    assert isinstance(found["module"], OnnxModule)


def test_predict_takes_backend_onnx_int8(tmp_path, synth_slide, smp_model):  # noqa: F811
    out = tmp_path / "cli.zarr"
    command = [sys.executable, "-m", "napari_hubmap.cli", "predict", str(synth_slide), "--model", str(smp_model.path),
               "--out", str(out), "--backend", "onnx-int8", "--no-skip-background"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["backend"] == "onnx-int8"

"""The ONNX Runtime backend: the same maps as torch, a graph cache that is rebuilt when stale or corrupt."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_hubmap.errors import HubmapInputError
from napari_hubmap.inference import InferenceConfig, predict_slide
from napari_hubmap.inference.onnx_backend import (OnnxModule, graph_path, onnx_graph, onnx_model, resolve_backend,
                                                  weights_digest)
from napari_hubmap.registry import build_module, load_model, save_model
from napari_hubmap.stores.probability import open_probability

from test_inference import synth_slide  # noqa: F401  (fixture)
from test_registry import tiny_card


@pytest.fixture
def smp_model(tmp_path):
    """A real (tiny) segmentation-models-pytorch U-Net saved in the registry format."""
    card = tiny_card(tile=128, overlap=32)
    torch.manual_seed(0)
    folder = save_model(build_module(card), card, tmp_path / "models" / "tiny")
    return load_model(folder)


def map_of(slide, out, model, backend):
    result = predict_slide(slide, out, InferenceConfig(backend=backend, skip_background=False), models=[model])
    return result, np.asarray(open_probability(out)[0][0][:]).astype(int)


def test_onnx_and_torch_maps_agree_within_one_grey_level(tmp_path, synth_slide, smp_model):  # noqa: F811
    torch_result, torch_map = map_of(synth_slide, tmp_path / "torch.zarr", smp_model, "torch")
    onnx_result, onnx_map = map_of(synth_slide, tmp_path / "onnx.zarr", smp_model, "onnx")
    assert (torch_result.backend, onnx_result.backend) == ("torch", "onnx")
    assert np.abs(torch_map - onnx_map).max() <= 1
    assert np.ptp(torch_map) > 20  # a map with structure, not a constant that any backend would match


def test_tiles_forwarded_side_by_side_give_the_one_by_one_map(tmp_path, synth_slide, smp_model, monkeypatch):  # noqa: F811
    """On a CPU with two threads the engine forwards two tiles at once, each on a one-thread twin of the session;
    the map is the one the tiles make one by one (one thread)."""
    from napari_hubmap.inference import engine

    calls = []
    forward = engine._forward_chunk
    monkeypatch.setattr(engine, "_forward_chunk", lambda *a, **k: calls.append((a[1].shape, a[4:])) or forward(*a, **k))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _, one = map_of(synth_slide, tmp_path / "one.zarr", onnx_model(load_model(smp_model.path)), "onnx")
        assert calls and all(module == () for _, module in calls)  # one thread: no twin, whole calls
        calls.clear()
        torch.set_num_threads(2)
        model = onnx_model(load_model(smp_model.path))
        assert model.module.threads == 2 and model.module.single_threaded((1, 32, 32)).threads == 1
        _, side_by_side = map_of(synth_slide, tmp_path / "two.zarr", model, "onnx")
    finally:
        torch.set_num_threads(threads)
    # each tile alone, on the one-thread twin fixed to that tile's shape (made once, then reused)
    assert calls and all(shape[0] == 1 and module[0] is model.module.single_threaded((1, *shape[2:]))
                         and module[0].threads == 1 and module[0].shape == (1, *shape[2:]) for shape, module in calls)
    assert set(model.module._single) == {(1, 32, 32)} | {(1, *shape[2:]) for shape, _ in calls}
    assert np.abs(one - side_by_side).max() <= 1 and np.ptp(one) > 20


def test_the_next_batch_is_queued_before_this_one_blends(tmp_path, synth_slide, smp_model, monkeypatch):  # noqa: F811
    """With tile threads the engine queues batch b + 1's tiles before it blends batch b, so the threads never wait
    for the blending (and a batch with one tile left does not leave a core idle); the map is the same."""
    from napari_hubmap.inference import engine

    events = []
    submit, add = engine.TileParallel.submit, engine.RowAccumulator.add
    monkeypatch.setattr(engine.TileParallel, "submit", lambda self, *a: events.append("queue") or submit(self, *a))
    monkeypatch.setattr(engine.RowAccumulator, "add", lambda self, *a: events.append("blend") or add(self, *a))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _, pipelined = map_of(synth_slide, tmp_path / "two.zarr", onnx_model(load_model(smp_model.path)), "onnx")
    finally:
        torch.set_num_threads(threads)
    _, plain = map_of(synth_slide, tmp_path / "torch.zarr", smp_model, "torch")
    assert events.count("queue") > 2 and events[:2] == ["queue", "queue"]  # two batches queued before the first blends
    first_blends = events.index("blend")
    assert events[first_blends:].count("queue") == events.count("queue") - 2  # then one more as each batch blends
    assert np.abs(pipelined - plain).max() <= 1


def test_auto_is_onnx_on_the_cpu_and_torch_elsewhere():
    assert resolve_backend("auto", torch.device("cpu")) == "onnx"
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    with pytest.raises(HubmapInputError, match="CPU only"):
        resolve_backend("onnx", torch.device("cuda"))
    with pytest.raises(HubmapInputError, match="backend must be one of"):
        resolve_backend("tensorrt", torch.device("cpu"))


def test_graph_is_exported_once_and_reused(smp_model):
    first = onnx_graph(smp_model)
    stamp = first.stat().st_mtime_ns
    assert onnx_graph(smp_model) == first and first.stat().st_mtime_ns == stamp


def test_new_weights_get_a_new_graph(smp_model, tmp_path, synth_slide):  # noqa: F811
    old = onnx_graph(smp_model)
    with torch.no_grad():
        for p in smp_model.module.parameters():
            p.add_(0.05)
    folder = save_model(smp_model.module, smp_model.card, tmp_path / "models" / "tiny2")
    changed = load_model(folder)
    new = onnx_graph(changed)
    assert new != old and weights_digest(changed) != weights_digest(smp_model)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = changed.module(x)
    assert torch.allclose(OnnxModule(new)(x), expected, atol=1e-4)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "record"])
def test_a_corrupt_cached_graph_is_rebuilt_not_trusted(smp_model, damage):
    graph = onnx_graph(smp_model)
    original = graph.read_bytes()
    if damage == "truncate":
        graph.write_bytes(original[: len(original) // 2])
    elif damage == "garbage":
        graph.write_bytes(b"\0" * len(original))
    else:
        graph.with_suffix(".json").write_text("{not json")
    rebuilt = onnx_model(smp_model)
    assert graph.read_bytes() != b"\0" * len(original) and len(graph.read_bytes()) > len(original) // 2
    assert json.loads(graph.with_suffix(".json").read_text())["weights_sha256"] == weights_digest(smp_model)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        expected = smp_model.module(x)
    assert torch.allclose(rebuilt.module(x), expected, atol=1e-4)


def test_cache_follows_its_environment_variable(smp_model, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_HUBMAP_ONNX_CACHE", str(tmp_path / "elsewhere"))
    assert onnx_graph(smp_model).parent == tmp_path / "elsewhere"
    assert graph_path(smp_model.card, weights_digest(smp_model)).is_file()


def test_off_the_main_thread_a_registry_model_is_exported_in_a_child_process(smp_model, monkeypatch):
    """A viewer's worker thread must not trace in-process (tracing holds the GIL for seconds)."""
    import threading

    from napari_hubmap.inference import onnx_backend

    def no_tracing_here(*args, **kwargs):
        raise AssertionError("exported in this process")

    monkeypatch.setattr(onnx_backend, "export_graph", no_tracing_here)
    found = {}
    worker = threading.Thread(target=lambda: found.update(graph=onnx_graph(smp_model)))
    worker.start()
    worker.join(120)
    assert found["graph"].is_file()
    with pytest.raises(AssertionError, match="exported in this process"):  # the main thread traces here
        onnx_graph(load_model(save_model(smp_model.module, smp_model.card.replace(name="other"),
                                         smp_model.path.parent / "other")))

"""ONNX Runtime on the CPU: a registry model exported once to ONNX, cached by its weights, run in torch's place.

:func:`onnx_graph` exports a model's network (dynamic batch, opset :data:`OPSET`) into the user cache
(``$NAPARI_HUBMAP_ONNX_CACHE``, default ``~/.cache/napari-hubmap/onnx``), keyed by the weights' SHA-256, the
architecture and :data:`EXPORTER` (the exporter's version). Beside each graph a small JSON record holds the
graph's own SHA-256: a graph whose bytes no longer match it (truncated, corrupted, half-written), or that
ONNX Runtime cannot open, is rebuilt, never trusted. A graph is written under a temporary name and renamed,
so a crash never leaves one that looks complete.

:class:`OnnxModule` runs such a graph with ``CPUExecutionProvider`` and as many intra-op threads as torch
uses; it takes and returns torch tensors, so the engine's TTA and blending are the same for both backends.
The engine runs its tiles side by side instead, one per CPU thread, each on one thread
(:meth:`OnnxModule.single_threaded`): a U-Net's many small layers leave two threads on one tile idle much of
the time (shipped model, 384 px tiles, 2 cores: 0.049 s per tile on two threads, 0.037 s two tiles at once;
float 0.073 and 0.063 s). That twin is told the one tile shape it will see (ONNX Runtime's free-dimension
overrides), so it plans its layouts and memory once for it: 3-5 % less time per tile (0.0379 against 0.0393 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import HubmapInputError
from ..registry.weights import sha256_file
from .graph_records import INPUT, OUTPUT, made_in_child, record_matches, record_path, run_in_child

OPSET = 17
EXPORTER = f"torch-{torch.__version__.split('+')[0]}-torchscript-opset{OPSET}-v1"
"""What made a graph; part of its cache key, so a new exporter rebuilds every cached graph."""
CACHE_ENV = "NAPARI_HUBMAP_ONNX_CACHE"


def onnx_available() -> bool:
    """Whether ONNX Runtime can be imported here."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: torch.device) -> str:
    """``torch``, ``onnx`` or ``onnx-int8`` for ``backend`` (one of :data:`~napari_hubmap.inference.config.BACKENDS`)
    on ``device``: ``auto`` is the float ONNX graph on the CPU (the int8 one is asked for by name)."""
    from .config import BACKENDS

    if backend not in BACKENDS:
        raise HubmapInputError(None, f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "onnx" if device.type == "cpu" and onnx_available() else "torch"
    if backend.startswith("onnx") and device.type != "cpu":
        raise HubmapInputError(None, f"the {backend} backend runs on the CPU only (device {device}); use --backend torch")
    if backend.startswith("onnx") and not onnx_available():
        raise HubmapInputError(None, f"the {backend} backend needs onnxruntime: pip install onnxruntime")
    return backend


def onnx_cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "napari-hubmap" / "onnx"


def weights_digest(model) -> str:
    """The SHA-256 of a model's weights: its card's (checked when a registry model loads), else (a network
    built in memory) one computed from its parameters and buffers."""
    if model.card.weights_sha256:
        return model.card.weights_sha256
    digest = hashlib.sha256()
    for name, value in sorted(model.module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_key(card, weights_sha256: str) -> str:
    """Hex key of a model's graph: its weights, its architecture and the exporter."""
    what = {"weights_sha256": weights_sha256, "architecture": card.architecture, "encoder": card.encoder,
            "in_channels": card.in_channels, "classes": card.classes, "kwargs": card.architecture_kwargs,
            "exporter": EXPORTER}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:20]


def graph_path(card, weights_sha256: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in card.name) or "model"
    return onnx_cache_root() / f"{safe}-{cache_key(card, weights_sha256)}.onnx"


SHAPE_NAMES = ("batch", "height", "width")
"""The input's free dimensions as :func:`export_graph` names them (channels are fixed)."""


def _session(graph: Path, threads: int, shape: tuple[int, int, int] | None = None):
    """A session of ``graph`` on ``threads`` intra-op threads; ``shape`` (batch, height, width): the only input
    shape it will be given, fixed for the graph optimiser."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    for name, size in zip(SHAPE_NAMES, shape or ()):
        options.add_free_dimension_override_by_name(name, int(size))
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # no spin-waiting between parallel sections: the engine's reader threads share the cores (pipeline
    # 15.2 s against 16.9 s with spinning on a 30000 x 25000 slide, benchmarks/bench_inference.py part d)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def _trusted(graph: Path, weights_sha256: str) -> bool:
    """The cached graph is there, whole (its bytes match its record) and made from these weights."""
    return record_matches(graph, weights_sha256=weights_sha256, exporter=EXPORTER)


def export_graph(module: torch.nn.Module, card, graph: Path, weights_sha256: str) -> None:
    """Export ``module`` (eval mode, CPU copy) to ``graph`` with a dynamic batch, then record its SHA-256."""
    import copy

    from ..atomic import atomic_path, write_text_atomic

    cpu = copy.deepcopy(module).to("cpu").eval()
    example = torch.zeros(1, card.in_channels, card.tile, card.tile)
    with atomic_path(graph) as tmp:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(cpu, (example,), str(tmp), dynamo=False, opset_version=OPSET, input_names=[INPUT],
                              output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch", 2: "height", 3: "width"},
                                                                   OUTPUT: {0: "batch", 2: "height", 3: "width"}})
        record = {"model": card.name, "weights_sha256": weights_sha256, "exporter": EXPORTER,
                  "onnx_sha256": sha256_file(tmp)}
        write_text_atomic(record_path(graph), json.dumps(record))


def _export(model, graph: Path, weights_sha256: str) -> None:
    """Export here when called from the main thread (the command line, scripts); from another thread (a
    viewer's worker) export a saved registry model in a child process, since tracing holds the GIL for
    seconds and would freeze the viewer. Networks built in memory are always exported here."""
    if made_in_child(model):
        run_in_child("napari_hubmap.inference.onnx_backend", [model.path, graph], Path(model.path),
                     f"cannot export model {model.card.name!r} to ONNX")
    else:
        export_graph(model.module, model.card, graph, weights_sha256)


def onnx_graph(model) -> Path:
    """The cached ONNX graph of a loaded registry model, exported first when missing, stale or corrupt."""
    weights = weights_digest(model)
    graph = graph_path(model.card, weights)
    if _trusted(graph, weights):
        return graph
    try:
        _export(model, graph, weights)
    except OSError as error:
        raise HubmapInputError(graph.parent, f"cannot write the ONNX graph of model {model.card.name!r}: "
                               f"{error.strerror or error}") from None
    return graph


class OnnxModule:
    """Callable like the torch network: (N, C, H, W) float tensor -> (N, classes, H, W) tensor."""

    def __init__(self, graph: Path, threads: int | None = None, int8: bool = False,
                 shape: tuple[int, int, int] | None = None):
        self.graph = graph
        self.int8 = int8  # the graph is the quantised one (:mod:`.int8`)
        self.threads = max(1, threads or torch.get_num_threads())
        self.shape = shape  # (batch, height, width) the session is fixed to; None: any
        self.session = _session(graph, self.threads, shape)
        self._single: dict[tuple[int, int, int], OnnxModule] = {}

    def single_threaded(self, shape: tuple[int, int, int]) -> "OnnxModule":
        """The same graph on one intra-op thread, fixed to input ``shape`` (batch, height, width), for
        :attr:`threads` callers at once (its session is thread-safe); one per shape, made on first use."""
        shape = tuple(int(s) for s in shape)
        if shape not in self._single:
            self._single[shape] = OnnxModule(self.graph, threads=1, int8=self.int8, shape=shape)
        return self._single[shape]

    def to(self, *args, **kwargs) -> "OnnxModule":
        return self  # the CPU is its one device

    def eval(self) -> "OnnxModule":
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: array})[0])


def onnx_model(model, int8: bool = False):
    """``model`` (a :class:`~napari_hubmap.registry.LoadedModel`) with its network run by ONNX Runtime, as its
    float graph or (``int8``) that graph quantised (:mod:`.int8`).

    A cached graph that ONNX Runtime cannot open is made again once."""
    from ..registry import LoadedModel
    from .int8 import int8_graph, int8_path

    if isinstance(model.module, OnnxModule):
        if model.module.int8 != int8:
            raise HubmapInputError(model.path, f"model {model.card.name!r} already runs as an ONNX graph "
                                   f"({'int8' if model.module.int8 else 'float'}); load it again for the other one")
        return model
    if not onnx_available():
        raise HubmapInputError(None, "the onnx backend needs onnxruntime: pip install onnxruntime")
    graph = onnx_graph(model)
    try:
        module = OnnxModule(graph)
    except Exception:  # onnxruntime raises its own classes for unreadable graphs
        _export(model, graph, weights_digest(model))
        module = OnnxModule(graph)
    if int8:
        try:
            module = OnnxModule(int8_graph(model, graph), int8=True)
        except HubmapInputError:
            raise
        except Exception:  # a whole-looking int8 graph that onnxruntime cannot open: quantised again once
            record_path(int8_path(graph)).unlink(missing_ok=True)
            module = OnnxModule(int8_graph(model, graph), int8=True)
    return LoadedModel(model.card, module, model.path)


def runtime_models(models: list, backend: str) -> list:
    """``models`` as ``backend`` (from :func:`resolve_backend`) runs them."""
    if backend == "torch":
        return models
    return [onnx_model(model, int8=backend == "onnx-int8") for model in models]


def main(argv: list[str] | None = None) -> int:
    """``python -m napari_hubmap.inference.onnx_backend MODEL_FOLDER GRAPH``: export one registry model."""
    from ..registry import load_model

    folder, graph = argv or sys.argv[1:]
    model = load_model(folder)
    export_graph(model.module, model.card, Path(graph), model.card.weights_sha256)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

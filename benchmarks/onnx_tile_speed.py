"""How fast the float network itself can run a tile on this CPU: the shipped model's cached ONNX graph, one thread
per process and as many processes at once as there are cores (what the engine's tile threads do), in ways the engine
could run it.

- ``ort-1``: ONNX Runtime, one tile a call (the engine's way);
- ``ort-2``: ONNX Runtime, two tiles in one call (the weights read once for both);
- ``openvino``: OpenVINO's CPU plugin, f32, one tile a call (only where ``openvino`` is installed; it is not a
  dependency: ``pip install openvino`` in a scratch environment).

Each prints the median seconds per tile of every process. Session 29 (2 cores, AMD EPYC with AVX-512, the shipped
``hubmap-default``, 6.7 GMAC a 384 px tile; two processes at once): ``ort-1`` 0.0751 / 0.0755, ``ort-2`` 0.0751 /
0.0762, OpenVINO 2026.4 (installed into the venv for the run, removed after) 0.1349 / 0.1360 s a tile.

    python benchmarks/onnx_tile_speed.py [--way ort-1 ort-2 openvino] [--processes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

TIMED_CALLS = 24


def graph_path() -> str:
    """The shipped default's float ONNX graph (exported into the cache once, as ``predict`` does)."""
    from napari_hubmap.inference.onnx_backend import onnx_model
    from napari_hubmap.registry import load_model

    return str(onnx_model(load_model("hubmap-default")).module.graph)


def runner(way: str, path: str, tile: int):
    """A function that runs one call of ``way`` and the number of tiles it carries."""
    import numpy as np

    batch = 2 if way == "ort-2" else 1
    x = np.random.default_rng(0).standard_normal((batch, 3, tile, tile)).astype(np.float32)
    if way.startswith("ort"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.add_free_dimension_override_by_name("batch", batch)
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return (lambda: session.run(None, {name: x})), batch
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)
    model.reshape({model.inputs[0].get_any_name(): list(x.shape)})
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return (lambda: request.infer({0: x})), batch


def time_one(way: str, path: str, tile: int) -> float:
    """Median seconds per tile of ``way`` in this process (two calls first, untimed)."""
    import statistics

    call, tiles = runner(way, path, tile)
    for _ in range(2):
        call()
    times = []
    for _ in range(TIMED_CALLS // tiles):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) / tiles)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--way", nargs="+", default=["ort-1", "ort-2", "openvino"])
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tile", type=int, default=384)
    parser.add_argument("--child", nargs=2, metavar=("WAY", "GRAPH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(time_one(args.child[0], args.child[1], args.tile)))
        return
    path = graph_path()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for way in args.way:
        if way == "openvino" and subprocess.run([sys.executable, "-c", "import openvino"], capture_output=True).returncode:
            print(f"{way}: not installed, skipped", flush=True)
            continue
        children = [subprocess.Popen([sys.executable, __file__, "--child", way, path, "--tile", str(args.tile)],
                                     stdout=subprocess.PIPE, text=True, env=env) for _ in range(args.processes)]
        seconds = [json.loads(child.communicate()[0]) for child in children]
        print(f"{way}: {', '.join(f'{s:.4f}' for s in seconds)} s a tile ({args.processes} processes at once)", flush=True)


if __name__ == "__main__":
    main()

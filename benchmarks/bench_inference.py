"""Whole-slide inference on the CPU: pipeline efficiency, MONAI comparison, memory vs slide size.

(a) Pipeline efficiency = (pure batched forward pass over the plan's computed tiles, pre-loaded as
    normalised tensors, same batch size and TTA, torch.inference_mode) / (wall time of
    ``predict_slide`` with the same config); readers=2 and readers=1.
(b) ``predict_slide`` next to MONAI's ``sliding_window_inference`` (Gaussian mode, roi = tile,
    overlap = overlap / tile) on the same working-scale image: a 16384 x 12288 slide read at
    downscale 2 (8192 x 6144 working scale). MONAI's wall time includes loading the slide and
    shrinking it to the working scale as one tensor (what its users do). MONAI runs with
    sw_batch_size 4 and 1; napari-hubmap with 4 tiles per forward call (skip_background=False: the
    same tiles) and with its CPU default of 1 tile per forward call (skip_background off and on).
    Peak RSS is reported whole and as working memory (peak less the RSS with torch, smp and the
    model loaded, ~0.8 GB of libraries alike for every method).
(d) torch eager vs ONNX Runtime (``backend``) through the whole pipeline on the same slide and tiles (the
    16384 x 12288 slide, tissue skipped, the engine's CPU defaults), ABBA over two rounds; target: ONNX
    >= 1.7x. Part (b) runs napari-hubmap with both backends as well.
With ``--model FOLDER`` (e.g. ``models/hubmap-default``, the model users run) parts (b) and (d) use that
trained model at its card's tile, overlap and working scale (the engine's plan; MONAI gets the same
working-scale image and windows) instead of the random ResNet-18; ``--slide WxH`` sets the synthetic
slide's size (a HuBMAP section: 30000x25000 at 0.5 µm/px). The ONNX gain depends on the network: the
ResNet-18's convolutions are already fast in torch, the EfficientNet-B0's depthwise ones are not.
Measured so on 2 idle cores (shipped model, 30000x25000, 270 tiles, 210 with tissue): MONAI 41.1 s (sw 1) /
55.0 s (sw 4), peak RSS 3.7 GB; predict_slide torch 28.3 s same tiles, 20.5 s skipping background; ONNX
19.8 s (2.08x MONAI) and 16.1 s (2.56x), peak RSS 1.2 GB (0.31 of MONAI's); part (d) ONNX 1.49x torch
(15.8 / 23.5 s). The network alone, one 384 tile: ONNX 0.057 s, torch 0.093 s with the engine's NHWC-strided
input (0.109 s NCHW): the pipeline's ONNX gain cannot exceed ~1.6x with this model on this CPU.
Measured again with the int8 graph (``onnx-int8``, 2 idle cores with AVX512-VNNI, same slide): part (d) torch
24.2 s, ONNX 17.0 s (1.42x), int8 12.7 s (1.90x; its map 6.9 grey levels from the float one on average over
tissue, masks at 0.5 Dice 0.98); part (b) MONAI 53.9 s (sw 1, of which 25.5 s loading) / 57.6 s (sw 4), ONNX
19.0 s same tiles (2.84x) and 17.5 s skipping background (3.07x), int8 14.2 s (3.80x) and 12.6 s (4.26x),
peak RSS 1.1-1.2 GB against MONAI's 3.7 GB (1.7 GB in the first int8 run, whose model load quantised the graph).
Measured again after the ONNX backends began forwarding tiles side by side (one per thread; the network alone,
one thread per tile, two at once: float 0.063 s per tile, int8 0.037 s, torch's engine path 0.109 s on two
threads), with the faster tissue mask (setup 0.3 s against 1.0-1.4 s) and normalisation, 2 idle cores, same
slide: part (d) torch 26.3 s, ONNX 17.8 s (1.47x), int8 11.7 s (2.25x; its map 6.9 grey levels from the float
one, masks at 0.5 Dice 0.98); part (b) MONAI 53.2 s (sw 1) / 71.1 s (sw 4), ONNX 23.1 s same tiles (2.31x) and
18.4 s skipping background (2.88x), int8 14.7 s (3.62x) and 11.6 s (4.57x), peak RSS 1.2 GB (0.31-0.33 of
MONAI's); 522 s for parts b and d. The float graph stays short of 1.7x torch in the pipeline, though its
network alone is 1.72x torch's: the run keeps 1.74 of the 2 cores busy with ONNX against 1.91 with torch; the
readers' 2.5 CPU-s (each tile 2304 px of level 0 shrunk 6x) and the batch-by-batch hand-over between reading,
forwarding and blending are what is left.
Measured again (session 27, another 2-core machine, on which torch is faster) after the engine began queueing the
next batch's tiles on the tile threads before blending the current one (they no longer wait for the blending, and a
batch whose last tile is odd no longer leaves a core idle), part (d) three times, alternating with the engine before
the change (``PYTHONPATH`` at a worktree of the previous commit, same slide and model): ONNX 10.1 / 9.8 / 9.9 s
against 10.7 / 10.5 / 10.6 s before (7 % less), torch 15.8-17.7 s in both (the ratio moves with torch's own noise:
1.69x / 1.72x / 1.60x against 1.56x / 1.51x / 1.67x; the median torch run over all six, 16.75 s, gives 1.69x against
1.58x), int8 6.4-6.6 s against 6.8-7.1 s; ONNX keeps 1.93 of the 2 cores busy against 1.82 before. Then four rounds
in one run (``--rounds 4``, medians): torch 16.9 s, ONNX 10.4 s (1.62x), int8 7.0 s (2.41x): on this machine the float
graph's pipeline lies at 1.6-1.7x torch, short of the 1.7x asked more often than not.
(c) Peak RSS of ``predict_slide`` on a 16384 x 12288 vs a 49152 x 36864 slide (downscale 2,
    skip_background on), with a very fast model: (c) is about memory, not speed.

Every measurement runs in a fresh process (peak RSS = that process's ru_maxrss, cross-checked with
VmHWM; this parent process never imports torch, since Linux carries a parent's RSS at fork over into
the child's ru_maxrss). Models are loaded before the clock starts, for every method alike. The slide
file is read through the page cache first, so all runs read it warm; pyramid levels come from the
file only (a private, empty NAPARI_HUBMAP_CACHE), so tiles are read at level 0 and shrunk 2x.
Wall times on a shared machine are noisy: each measurement waits for the CPUs to be idle
(--wait-idle), measures the CPU time other processes took meanwhile (others_cpu_share, steal
included) and is repeated (--retries) when that exceeds 10 %; the least disturbed run is kept.

Models (random init, saved through the registry into bench-out/models; timings only):
  main: smp Unet, encoder resnet18, decoder_channels (128, 64, 32, 16, 16), tile 512, overlap 128,
        downscale 2, ImageNet normalisation: ~0.17 s per 512 tile in batches of 4 on 2 CPU cores with
        the engine's (N, C, H, W) tensors, which have NHWC strides (~0.23 s for NCHW-contiguous
        input, e.g. MONAI's patches); smp's default decoder (256, ..., 16) is ~0.95 s per tile.
  fast: smp Unet, encoder tu-mobilenetv3_small_050, decoder_channels (32, 16, 8, 8, 8), same card
        otherwise: ~0.035 s per tile; used for (c) only.

Slides: synthetic PAS kidney (napari_hubmap.synth, seed 1, flat tiled uncompressed TIFF, ~60 %
tissue) in bench-out/, shared with bench_open.py and reused; the 49152 x 36864 slide of (c)
(5.4 GB, ~1 min to write) is deleted afterwards unless --keep-slides.

    python benchmarks/bench_inference.py                 # all parts (~12 min on 2 idle cores)
    python benchmarks/bench_inference.py --part a b      # some parts
    python benchmarks/bench_inference.py --quick         # small slides, smoke run (~1.5 min)
    python benchmarks/bench_inference.py --part b d --model models/hubmap-default --slide 30000x25000
    python benchmarks/bench_inference.py --part d --model models/hubmap-default --slide 30000x25000 --rounds 4

Results: JSON lines on stdout, a table on stderr, bench-out/bench_inference.json
(bench_inference_quick.json with --quick; -MODEL before .json with --model).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_open import make_slide  # the same synthetic slides (benchmarks/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]

MODELS = {
    "main": dict(architecture="Unet", encoder="resnet18", architecture_kwargs={"decoder_channels": [128, 64, 32, 16, 16]}),
    "fast": dict(
        architecture="Unet", encoder="tu-mobilenetv3_small_050", architecture_kwargs={"decoder_channels": [32, 16, 8, 8, 8]}
    ),
}
TILE, OVERLAP, DOWNSCALE, BATCH, TTA = 512, 128, 2, 4, "none"
MAX_OTHERS = 0.1  # share of the machine's CPU time other processes may use during a measurement


# --- helpers (both processes) --------------------------------------------------------------------


def peak_rss_mb() -> float:
    """ru_maxrss of this process. Linux carries the parent's RSS at fork over into a child's
    ru_maxrss, so the parent process of this script never imports torch (models are made in a child)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hwm_rss_mb() -> float:
    """VmHWM: the peak RSS of this process's own address space (a cross-check of ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def memory(base_rss: float) -> dict:
    return {"peak_rss_mb": peak_rss_mb(), "vm_hwm_mb": hwm_rss_mb(), "rss_after_imports_mb": base_rss}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def config_of(args: dict):
    from napari_hubmap.inference.engine import InferenceConfig

    return InferenceConfig(
        models=[args["model"]], tta=args.get("tta", TTA), tile=args.get("tile", TILE), overlap=args.get("overlap", OVERLAP), device="cpu",
        batch=args.get("batch", BATCH), readers=args.get("readers", 2), skip_background=args.get("skip_background", True),
        forward_batch=args.get("forward_batch"), backend=args.get("backend", "torch"),
    )


# --- measurements (each in its own process) ------------------------------------------------------


def measure_forward(args: dict) -> dict:
    """Pure batched forward over the computed tiles of the plan, pre-loaded as normalised tensors. An ONNX backend
    forwards them the engine's way on the CPU (:class:`~napari_hubmap.inference.engine.TileParallel`: one tile per
    one-thread session, as many at once as there are threads): the network's own time, nothing read or blended."""
    import numpy as np
    import torch

    from napari_hubmap.inference.engine import forward_batch_size, normalise, plan_slide
    from napari_hubmap.inference.tile_reader import TileReader
    from napari_hubmap.inference.tta import apply, invert, resolve_tta
    from napari_hubmap.registry import load_model
    from napari_hubmap.slide import open_slide

    base_rss = peak_rss_mb()
    config = config_of(args)
    model = load_model(args["model"], device="cpu")
    with open_slide(args["slide"]) as slide:
        plan = plan_slide(slide, [model], config)
    run = plan.runs[0]
    jobs = [j for j in plan.jobs if not j.skipped]
    reader = TileReader(args["slide"])
    t0 = time.perf_counter()
    batches = []
    for i in range(0, len(jobs), config.batch):
        tiles = np.stack([reader.read(j.y, j.x, run.tile, run.downscale) for j in jobs[i : i + config.batch]])
        batches.append(torch.from_numpy(normalise(tiles, model.card.normalization)))
    load_s = time.perf_counter() - t0
    tta = resolve_tta(config.tta)
    if config.backend.startswith("onnx"):
        return {**forward_onnx(model, config, batches, tta), "tiles": len(plan.jobs), "computed": len(jobs),
                "skipped": plan.skipped, "preload_s": load_s, **memory(base_rss)}
    module = model.module
    chunk = forward_batch_size(config, torch.device("cpu"))  # tiles per forward call, as the engine does
    with torch.inference_mode():
        module(batches[0][:chunk])  # warm-up (one-off kernel selection), not timed
        cpu0 = cpu_seconds()
        t0 = time.perf_counter()
        for batch in batches:
            for x in batch.split(chunk):
                total = None
                for name in tta:
                    prob = torch.sigmoid(invert(name, module(apply(name, x)))[:, 0])
                    total = prob if total is None else total + prob
        forward_s = time.perf_counter() - t0
        cpu_s = cpu_seconds() - cpu0
    return {
        "forward_s": forward_s, "forward_cpu_s": cpu_s, "cpu_util": cpu_s / forward_s, "tiles": len(plan.jobs), "computed": len(jobs), "skipped": plan.skipped,
        "s_per_tile": forward_s / max(1, len(jobs)), "preload_s": load_s, "torch_threads": torch.get_num_threads(), "forward_batch": chunk,
        **memory(base_rss),
    }


def forward_onnx(model, config, batches: list, tta: tuple[str, ...]) -> dict:
    """The preloaded ``batches`` through ``config.backend``'s graph of ``model`` as the engine forwards them on the
    CPU (every batch queued at once: the threads never wait); the first batch once beforehand, untimed."""
    import torch

    from napari_hubmap.inference.engine import TileParallel
    from napari_hubmap.inference.onnx_backend import onnx_model

    model = onnx_model(model, int8=config.backend == "onnx-int8")
    cpu = torch.device("cpu")
    arrays = [b.numpy() for b in batches]
    with TileParallel.for_models([model], cpu) as parallel:
        parallel.gather(parallel.submit(model, arrays[0], tta, cpu))  # sessions made, kernels chosen
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        pending = [parallel.submit(model, batch, tta, cpu) for batch in arrays]
        tiles = sum(len(parallel.gather(futures)) for futures in pending)
        forward_s, cpu_s = time.perf_counter() - t0, cpu_seconds() - cpu0
    return {"forward_s": forward_s, "forward_cpu_s": cpu_s, "cpu_util": cpu_s / forward_s, "s_per_tile": forward_s / max(1, tiles),
            "backend": config.backend, "torch_threads": torch.get_num_threads(), "forward_batch": 1}


def timed(owner, name: str, sink: list) -> None:
    """Instrumentation: append the duration of every call of ``owner.name`` to ``sink``."""
    inner = getattr(owner, name)

    def wrapper(*a, **k):
        t, c = time.perf_counter(), time.thread_time()
        try:
            return inner(*a, **k)
        finally:
            sink.append((time.perf_counter() - t, time.thread_time() - c))

    setattr(owner, name, wrapper)


def wall_of(spans: list) -> float:
    return sum(wall for wall, _ in spans)


def cpu_of(spans: list) -> float:
    return sum(cpu for _, cpu in spans)


def measure_predict(args: dict) -> dict:
    """``predict_slide`` wall time and peak RSS; forward time inside the pipeline is summed too."""
    import torch

    from napari_hubmap.inference import engine

    from napari_hubmap.registry import load_model

    base_rss = peak_rss_mb()
    config = config_of(args)
    t0 = time.perf_counter()
    model = load_model(args["model"], device="cpu")  # loaded outside the timing, as for MONAI and the pure forward
    if config.backend.startswith("onnx"):  # the graph exported (cached) and its session opened outside the timing too
        from napari_hubmap.inference.onnx_backend import onnx_model

        model = onnx_model(model, int8=config.backend == "onnx-int8")
    model_load_s = time.perf_counter() - t0
    ready_rss = peak_rss_mb()
    out = Path(args["out"])
    shutil.rmtree(out, ignore_errors=True)  # never resume
    in_forward = [0.0, 0]
    forward = engine.forward_probabilities

    def timed_forward(*a, **k):  # instrumentation: time spent in the model inside the pipeline
        t = time.perf_counter()
        try:
            return forward(*a, **k)
        finally:
            in_forward[0] += time.perf_counter() - t
            in_forward[1] += 1

    engine.forward_probabilities = timed_forward
    gather = engine.TileParallel.gather

    def timed_gather(futures):  # with tile threads (ONNX on the CPU): the main thread waiting for their results
        t = time.perf_counter()
        try:
            return gather(futures)
        finally:
            in_forward[0] += time.perf_counter() - t
            in_forward[1] += 1

    engine.TileParallel.gather = staticmethod(timed_gather)
    spent = {"read": [], "normalise": [], "blend_batch": [], "write_rows": []}
    timed(engine.TileReader, "read", spent["read"])  # reader threads
    timed(engine, "normalise", spent["normalise"])  # reader threads
    timed(engine, "_blend_batch", spent["blend_batch"])  # main thread, includes the forward
    timed(engine.ProbabilityStore, "write_rows", spent["write_rows"])  # main thread
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    result = engine.predict_slide(args["slide"], out, config, models=[model])
    wall = time.perf_counter() - t0
    cpu_s = cpu_seconds() - cpu0
    out_bytes = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    if not args.get("keep_out"):
        shutil.rmtree(out, ignore_errors=True)
    return {
        "wall_s": wall, "run_s": result.seconds, "setup_s": wall - result.seconds, "cpu_s": cpu_s, "model_load_s": model_load_s,
        "forward_in_pipeline_s": in_forward[0], "batches": in_forward[1], "cpu_util": cpu_s / wall,
        "readers_read_s": wall_of(spent["read"]), "readers_normalise_s": wall_of(spent["normalise"]),
        "readers_cpu_s": cpu_of(spent["read"]) + cpu_of(spent["normalise"]),
        "main_blend_s": wall_of(spent["blend_batch"]) - in_forward[0], "main_write_s": wall_of(spent["write_rows"]),
        "main_other_s": result.seconds - wall_of(spent["blend_batch"]) - wall_of(spent["write_rows"]),
        "tiles": result.tiles, "computed": result.computed, "skipped": result.skipped, "tiles_per_s": result.tiles_per_s,
        "complete": result.complete, "out_mb": out_bytes / 1e6, "torch_threads": torch.get_num_threads(),
        "backend": result.backend,
        **memory(base_rss), "rss_model_loaded_mb": ready_rss,
    }


def measure_monai(args: dict) -> dict:
    """What a MONAI user does: load the slide, shrink it to the working scale as one tensor, then
    ``sliding_window_inference`` in Gaussian mode over the whole image; probabilities to uint8."""
    import numpy as np
    import tifffile
    import torch
    from monai.inferers import sliding_window_inference

    from napari_hubmap.registry import load_model

    base_rss = peak_rss_mb()
    t0 = time.perf_counter()
    model = load_model(args["model"], device="cpu")  # outside the timing, as for predict_slide
    model_load_s = time.perf_counter() - t0
    ready_rss = peak_rss_mb()
    d, tile, overlap = engine_geometry(args, model)
    norm = model.card.normalization
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    full = tifffile.imread(args["slide"])  # (H, W, 3) uint8
    h, w = full.shape[0] // d, full.shape[1] // d
    work = np.empty((h, w, 3), np.uint8)
    for r in range(0, h, 256):  # area average d x d, a band at a time (no full-size float copy)
        band = full[r * d : min(r + 256, h) * d, : w * d].reshape(-1, d, w, d, 3).astype(np.uint16).sum(axis=(1, 3))
        work[r : r + 256] = (band + d * d // 2) // (d * d)
    del full
    x = torch.from_numpy(work).permute(2, 0, 1).contiguous()[None].float()
    del work
    mean = torch.tensor(norm["mean"]).view(1, 3, 1, 1) * norm["max_pixel_value"]
    std = torch.tensor(norm["std"]).view(1, 3, 1, 1) * norm["max_pixel_value"]
    x.sub_(mean).div_(std)
    load_s = time.perf_counter() - t0
    with torch.inference_mode():
        logits = sliding_window_inference(
            x, roi_size=(tile, tile), sw_batch_size=args["batch"], predictor=model.module,
            overlap=overlap / tile, mode="gaussian", sigma_scale=0.125,
        )
        prob = (torch.sigmoid_(logits[0, 0]) * 255).round_().byte().numpy()
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall, "load_s": load_s, "infer_s": wall - load_s, "cpu_s": cpu_seconds() - cpu0, "model_load_s": model_load_s,
        "working_shape": list(prob.shape), "downscale": d, "tile": tile, "overlap": overlap, "torch_threads": torch.get_num_threads(),
        **memory(base_rss), "rss_model_loaded_mb": ready_rss,
    }


def engine_geometry(args: dict, model) -> tuple[int, int, int]:
    """The working downscale, tile and overlap that ``predict_slide`` uses for this model on this slide
    (its plan's), so that MONAI runs on the same working-scale image with the same windows."""
    from napari_hubmap.inference.engine import plan_slide
    from napari_hubmap.slide import open_slide

    config = config_of(args)
    with open_slide(args["slide"]) as slide:
        run = plan_slide(slide, [model], config).runs[0]
    if run.downscale != int(run.downscale):
        raise SystemExit(f"MONAI comparison needs a whole working downscale, not {run.downscale}")
    return int(run.downscale), run.tile, config.overlap if config.overlap is not None else model.card.overlap


# --- orchestration -------------------------------------------------------------------------------


class Bench:
    def __init__(self, folder: Path, wait_idle: float = 0.0, retries: int = 0):
        self.folder = folder
        self.wait_idle = wait_idle
        self.retries = retries
        self.results: list[dict] = []
        self.memo: dict[str, dict] = {}
        self.env = {**os.environ, "PYTHONWARNINGS": "ignore", "NAPARI_HUBMAP_CACHE": str(folder / "inference-pyramid-cache")}

    def measure(self, kind: str, **args) -> dict:
        """One measurement in a fresh process (same measurement twice in one run: reused).

        Other processes' CPU use during the run is measured (/proc/stat busy time less this child's
        CPU time); above ``MAX_OTHERS`` of the machine the run is repeated (at most ``retries``
        times) and the least disturbed run is kept.
        """
        key = json.dumps([kind, args], sort_keys=True)
        if key in self.memo:
            return self.memo[key]
        best = None
        for attempt in range(1 + self.retries):
            result = self._run_child(kind, args)
            result["attempt"] = attempt + 1
            if best is None or result["others_cpu_share"] < best["others_cpu_share"]:
                best = result
            if result["others_cpu_share"] <= MAX_OTHERS:
                break
            print(f"{kind}: other processes used {result['others_cpu_share']:.0%} of the CPUs, measuring again", file=sys.stderr)
        self.memo[key] = best
        return best

    def _run_child(self, kind: str, args: dict) -> dict:
        warm_page_cache(Path(args["slide"]))
        idle = wait_for_idle(self.wait_idle)
        load = os.getloadavg()[0]
        cmd = [sys.executable, __file__, "--measure", kind, json.dumps(args)]
        busy0, children0, t0 = cpu_busy_seconds(), children_cpu_seconds(), time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=self.env)
        busy1, children1, wall = cpu_busy_seconds(), children_cpu_seconds(), time.perf_counter() - t0
        if out.returncode:
            sys.stderr.write(out.stderr)
            raise SystemExit(f"measurement {kind} failed ({out.returncode})")
        others = max(0.0, (busy1 - busy0) - (children1 - children0))
        return {
            **json.loads(out.stdout.strip().splitlines()[-1]),
            "idle_before": idle, "loadavg_before": load, "loadavg_after": os.getloadavg()[0],
            "others_cpu_share": others / (wall * (os.cpu_count() or 1)),
        }

    def report(self, row: dict) -> None:
        self.results.append(row)
        print(json.dumps(row), flush=True)


def cpu_busy_seconds() -> float:
    """Non-idle CPU time of the whole machine so far (all CPUs, /proc/stat), steal (time the
    hypervisor gave to other machines) included."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_idle_fraction(seconds: float = 2.0) -> float:
    """Share of all CPUs' time spent idle over the next ``seconds`` (/proc/stat)."""
    def sample():
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    (idle0, total0), _ = sample(), time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_for_idle(limit_s: float, idle: float = 0.9) -> float:
    """Wait (at most ``limit_s``) until other processes leave the CPUs >= ``idle`` idle; return the idle share."""
    deadline = time.monotonic() + limit_s
    share = cpu_idle_fraction()
    while share < idle and time.monotonic() < deadline:
        share = cpu_idle_fraction()
    return share


def warm_page_cache(path: Path, block: int = 64 << 20) -> None:
    """Read the file once so every run reads it from the page cache (not counted in RSS)."""
    with open(path, "rb", buffering=0) as f:
        while f.read(block):
            pass


def make_model(name: str, folder: Path) -> Path:
    """A randomly initialised model saved through the registry (reused when present), made in a
    child process so that this one stays small (see ``peak_rss_mb``)."""
    target = folder / "models" / f"bench-{name}"
    if not (target / "card.json").exists():
        cmd = [sys.executable, __file__, "--measure", "save_model", json.dumps({"name": name, "target": str(target)})]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return target


def save_bench_model(args: dict) -> dict:
    import torch

    from napari_hubmap.registry import ModelCard, build_module, save_model

    name = args["name"]
    card = ModelCard(
        name=f"bench-{name}", tile=TILE, overlap=OVERLAP, downscale=float(DOWNSCALE),
        notes="random init, for benchmarks/bench_inference.py timings only", **MODELS[name],
    )
    torch.manual_seed(0)
    save_model(build_module(card), card, Path(args["target"]))
    return {"saved": args["target"]}


MEASURES = {"forward": measure_forward, "predict": measure_predict, "monai": measure_monai, "save_model": save_bench_model}


def part_a(bench: Bench, slide: Path, model: Path, label: str) -> None:
    common = dict(slide=str(slide), model=str(model), skip_background=True)
    for readers in (2, 1):  # each predict_slide run right after its own pure-forward run (load drifts)
        forward = bench.measure("forward", **common, pair=readers)
        predict = bench.measure("predict", **common, readers=readers, out=str(bench.folder / "inference-out" / "a.zarr"))
        bench.report({
            "part": "a", "slide": label, "readers": readers, "efficiency": forward["forward_s"] / predict["wall_s"],
            "efficiency_run_only": forward["forward_s"] / predict["run_s"], "pure_forward_s": forward["forward_s"],
            "pure_forward_s_per_tile": forward["s_per_tile"], "pure_forward_cpu_s": forward["forward_cpu_s"],
            "pure_forward_loadavg": forward["loadavg_before"], "pure_forward_cpu_util": forward["cpu_util"], **{f"predict_{k}": v for k, v in predict.items()},
        })


def part_b(bench: Bench, slide: Path, model: Path, label: str) -> None:
    """MONAI with sw_batch_size = 4 and = 1 (tiles per forward call); napari-hubmap with 4 tiles
    per forward call (MONAI's batch) and with the engine's CPU default (1), against the MONAI run
    of the same forward batch. RSS share is given for the peak and for the working memory (peak less
    the RSS once torch, smp and the model are loaded: the same ~0.8 GB for every method)."""
    monai = {}
    for forward_batch in (BATCH, 1):
        monai[forward_batch] = bench.measure(
            "monai", slide=str(slide), model=str(model), batch=forward_batch, **geometry_of(model)
        )
        bench.report({"part": "b", "slide": label, "method": f"MONAI sliding_window_inference (sw_batch_size={forward_batch})",
                      "forward_batch": forward_batch, **monai[forward_batch]})
    for skip, forward_batch, backend in ((False, BATCH, "torch"), (False, None, "torch"), (True, None, "torch"),
                                         (False, None, "onnx"), (True, None, "onnx"),
                                         (False, None, "onnx-int8"), (True, None, "onnx-int8")):
        predict = bench.measure(
            "predict", slide=str(slide), model=str(model), skip_background=skip, readers=2, forward_batch=forward_batch,
            out=str(bench.folder / "inference-out" / "a.zarr"), backend=backend, **geometry_of(model),
        )
        fb = forward_batch or 1
        ref = monai[fb]
        bench.report({
            "part": "b", "slide": label, "forward_batch": fb,
            "method": f"napari-hubmap predict_slide ({backend}, skip_background={skip}, forward batch {fb})",
            "vs_monai_speed": ref["wall_s"] / predict["wall_s"], "vs_monai_rss": predict["peak_rss_mb"] / ref["peak_rss_mb"],
            "vs_monai_working_rss": working_mb(predict) / working_mb(ref),
            "vs_monai4_rss": predict["peak_rss_mb"] / monai[BATCH]["peak_rss_mb"],
            "vs_monai4_working_rss": working_mb(predict) / working_mb(monai[BATCH]),
            **predict,
        })
    for skip in (False, True):  # the float graph alone on the same tiles: no pipeline around it can beat this
        forward = bench.measure("forward", slide=str(slide), model=str(model), skip_background=skip, backend="onnx",
                                **geometry_of(model))
        bench.report({"part": "b-network", "slide": label, "method": f"float ONNX network alone (skip_background={skip})",
                      "vs_monai_speed": monai[1]["wall_s"] / forward["forward_s"], **forward})


def part_d(bench: Bench, slide: Path, model: Path, label: str, rounds: int = 2) -> None:
    """torch eager vs ONNX Runtime (float and int8 graphs) through the whole pipeline (``predict_slide``, the
    engine's CPU defaults, tissue skipped), on the same slide and tiles, the order reversed every round (ABC CBA)
    so that drift favours none; the median wall time of each is kept, and how far the int8 map lies from the
    float one (grey levels of 255 over the tissue's tiles)."""
    import statistics

    backends = ("torch", "onnx", "onnx-int8")
    runs: dict = {b: [] for b in backends}
    order = [b for i in range(rounds) for b in (backends if i % 2 == 0 else backends[::-1])]
    for index, backend in enumerate(order):  # the run's index in the key: each round a fresh run, not the memo
        runs[backend].append(bench.measure("predict", slide=str(slide), model=str(model), skip_background=True, readers=2,
                                           out=str(bench.folder / "inference-out" / f"d-{backend}.zarr"), backend=backend,
                                           run_index=index, keep_out=True, **geometry_of(model)))
    walls = {b: statistics.median(r["wall_s"] for r in rows) for b, rows in runs.items()}
    stores = {b: bench.folder / "inference-out" / f"d-{b}.zarr" for b in backends}
    gap = map_gap(stores["onnx"], stores["onnx-int8"])
    for store in stores.values():
        shutil.rmtree(store, ignore_errors=True)
    for backend, rows in runs.items():
        row = min(rows, key=lambda r: abs(r["wall_s"] - walls[backend]))
        bench.report({"part": "d", "slide": label, "method": f"predict_slide, backend {backend}",
                      "median_wall_s": walls[backend], "s_per_tile": walls[backend] / max(1, row["computed"]),
                      "speedup_vs_torch": walls["torch"] / walls[backend], "onnx_speedup": walls["torch"] / walls["onnx"],
                      **({"int8_vs_float_map": gap} if backend == "onnx-int8" else {}), **row})


def map_gap(float_store: Path, int8_store: Path) -> dict:
    """How far the int8 probability map lies from the float one, in grey levels of 255, over the pixels either
    map puts above 0.1 (tissue skipped is 0 in both), and the Dice of their masks at 0.5."""
    import numpy as np

    from napari_hubmap.stores.probability import open_probability

    a, b = (np.asarray(open_probability(store)[0][0][:]).astype(np.int16).squeeze() for store in (float_store, int8_store))
    where = (a > 25) | (b > 25)  # the stores hold probabilities as grey levels 0-255
    gap = np.abs(a - b)[where]
    ma, mb = a > 127, b > 127
    return {"mean_grey": float(gap.mean()) if gap.size else 0.0, "p99_grey": float(np.percentile(gap, 99)) if gap.size else 0.0,
            "dice_at_0.5": float(2 * (ma & mb).sum() / max(1, ma.sum() + mb.sum()))}


def geometry_of(model: Path) -> dict:
    """Tile and overlap options of a measurement: the benchmark's own for its random models, none (the
    card's, as a user's run) for a trained model given with ``--model``."""
    return {} if model.name.startswith("bench-") else {"tile": None, "overlap": None}


def working_mb(row: dict) -> float:
    """Peak RSS above the RSS once the libraries and the model are loaded."""
    return row["peak_rss_mb"] - row["rss_model_loaded_mb"]


def part_c(bench: Bench, slides: list[tuple[Path, str]], model: Path, keep: bool) -> None:
    rows = []
    for slide, label in slides:
        predict = bench.measure("predict", slide=str(slide), model=str(model), skip_background=True, readers=2,
                                out=str(bench.folder / "inference-out" / "c.zarr"))
        rows.append({"part": "c", "slide": label, **predict})
    for row in rows:
        row["rss_ratio_to_smallest"] = row["peak_rss_mb"] / rows[0]["peak_rss_mb"]
        bench.report(row)
    if not keep:
        for slide, _ in slides[1:]:
            slide.unlink(missing_ok=True)
            slide.with_suffix(".geojson").unlink(missing_ok=True)


def print_table(results: list[dict]) -> None:
    err = sys.stderr
    rows_a = [r for r in results if r["part"] == "a"]
    if rows_a:
        print(f"\n(a) pipeline efficiency on {rows_a[0]['slide']}, {rows_a[0]['predict_tiles']} tiles, "
              f"{rows_a[0]['predict_computed']} computed, {rows_a[0]['predict_skipped']} skipped", file=err)
        print("    readers  pure forward (load)  predict_slide (load)  efficiency  forward in pipeline  readers' CPU  blend  write  other  peak RSS", file=err)
        for r in rows_a:
            print(
                f"    {r['readers']:>7}  {r['pure_forward_s']:7.1f} s ({r['pure_forward_loadavg']:4.1f})  "
                f"{r['predict_wall_s']:9.1f} s ({r['predict_loadavg_before']:4.1f})  {r['efficiency']:9.2f}  "
                f"{r['predict_forward_in_pipeline_s']:17.1f} s  {r['predict_readers_cpu_s']:10.1f} s"
                f"  {r['predict_main_blend_s']:4.1f} s {r['predict_main_write_s']:4.1f} s {r['predict_main_other_s']:4.1f} s"
                f"  {r['predict_peak_rss_mb']:6.0f} MB", file=err)
    rows_b = [r for r in results if r["part"] == "b"]
    if rows_b:
        print(f"\n(b) same image: {rows_b[0]['slide']}; RSS share and speed-up against MONAI with the same forward batch", file=err)
        print("    method                                                          wall    computed  peak RSS (working)  speed-up  RSS share (working)", file=err)
        for r in rows_b:
            tiles = f"{r['computed']:>5}" if "computed" in r else "  all"
            extra = (f"  {r['vs_monai_speed']:6.2f}x  {r['vs_monai_rss']:5.2f} ({r['vs_monai_working_rss']:4.2f})"
                     if "vs_monai_speed" in r else "")
            print(f"    {r['method']:<62} {r['wall_s']:6.1f} s  {tiles:>8}  {r['peak_rss_mb']:6.0f} MB ({working_mb(r):5.0f} MB){extra}", file=err)
    for r in (r for r in results if r["part"] == "b-network"):
        print(f"    {r['method']:<62} {r['forward_s']:6.1f} s  {r['computed']:>8}  {r['s_per_tile']:.4f} s/tile"
              f"  ceiling against MONAI (sw_batch 1) {r['vs_monai_speed']:5.2f}x", file=err)
    rows_d = [r for r in results if r["part"] == "d"]
    if rows_d:
        print(f"\n(d) backends on {rows_d[0]['slide']}, {rows_d[0]['computed']} tiles computed", file=err)
        for r in rows_d:
            print(f"    {r['method']:<32} median {r['median_wall_s']:6.1f} s  {r['s_per_tile']:.3f} s/tile  "
                  f"{r['speedup_vs_torch']:.2f}x torch  peak RSS {r['peak_rss_mb']:6.0f} MB", file=err)
            if "int8_vs_float_map" in r:
                print(f"    int8 map vs float map: {json.dumps(r['int8_vs_float_map'])}", file=err)
    rows_c = [r for r in results if r["part"] == "c"]
    if rows_c:
        print("\n(c) peak RSS vs slide size  slide                 tiles computed   wall     peak RSS  ratio", file=err)
        for r in rows_c:
            print(f"                            {r['slide']:<20} {r['tiles']:>6} {r['computed']:>8} {r['wall_s']:7.1f} s {r['peak_rss_mb']:7.0f} MB  {r['rss_ratio_to_smallest']:5.2f}", file=err)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=["a", "b", "c", "d"], default=["a", "b", "c", "d"])
    parser.add_argument("--quick", action="store_true", help="small slides (smoke run)")
    parser.add_argument("--dir", type=Path, default=ROOT / "bench-out", help="slides, models and results (kept between runs)")
    parser.add_argument("--keep-slides", action="store_true", help="keep the big slide of (c) (else deleted afterwards)")
    parser.add_argument("--wait-idle", type=float, default=120.0, metavar="S",
                        help="before each measurement wait up to S seconds for the CPUs to be >= 90%% idle (shared machines)")
    parser.add_argument("--retries", type=int, default=2, help="repeat a measurement disturbed by other processes up to N times")
    parser.add_argument("--model", type=Path, help="a trained model folder (e.g. models/hubmap-default) for parts b and d, "
                        "run at its card's tile, overlap and working scale; default: the random ResNet-18 U-Net")
    parser.add_argument("--rounds", type=int, default=2, help="part d: rounds of the backends, the order reversed "
                        "every round; the median of each is kept (torch's wall time varies by about 6 %% run to run)")
    parser.add_argument("--slide", metavar="WxH", help="size of the synthetic slide of parts a, b and d (default 16384x12288)")
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "ARGS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        kind, margs = args.measure
        print(json.dumps(MEASURES[kind](json.loads(margs))))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.dir, args.wait_idle, args.retries)
    small, big = ((4096, 3072), (8192, 6144)) if args.quick else ((16384, 12288), (49152, 36864))
    if args.slide:
        small = tuple(int(v) for v in args.slide.lower().split("x"))

    def label(size, model=None):
        if model is not None:
            return f"{size[0]}x{size[1]}, {model.name} at its card's scale"
        return f"{size[0]}x{size[1]} @ds{DOWNSCALE} ({size[0] // DOWNSCALE}x{size[1] // DOWNSCALE})"

    main_model = make_model("main", args.dir)
    chosen = args.model.resolve() if args.model else main_model
    started = time.perf_counter()
    if "a" in args.part:
        part_a(bench, make_slide(*small, args.dir), main_model, label(small))
    if "b" in args.part:
        part_b(bench, make_slide(*small, args.dir), chosen, label(small, args.model))
    if "d" in args.part:
        part_d(bench, make_slide(*small, args.dir), chosen, label(small, args.model), args.rounds)
    if "c" in args.part:
        slides = [(make_slide(*size, args.dir), label(size)) for size in (small, big)]
        part_c(bench, slides, make_model("fast", args.dir), args.keep_slides)
    print_table(bench.results)
    print(f"\ntotal {time.perf_counter() - started:.0f} s", file=sys.stderr)
    name = "bench_inference_quick.json" if args.quick else "bench_inference.json"
    if args.model:
        name = name.replace(".json", f"-{args.model.resolve().name}.json")
    (args.dir / name).write_text(json.dumps(bench.results, indent=1))


if __name__ == "__main__":
    main()

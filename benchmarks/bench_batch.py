"""A cohort: one process vs a Dask LocalCluster of 2 single-threaded workers, and a projection to 1,000 slides.

Measured (the shipped ``hubmap-default`` model, the default backend, ``napari-hubmap batch``'s defaults:
RLE CSV and GeoJSON exports): a cohort of ``--slides`` synthetic PAS slides (``--size`` px square at
0.5 µm/px, ~60 % tissue) run by ``run_cohort`` in this process (torch / ONNX Runtime on both cores), then
on ``--workers`` worker processes of one thread each. Reported: wall time of each, per-slide overhead
(wall time per slide less the tiles' forward time measured alone: opening, tissue detection, reading,
post-processing, exports, and the models' loading spread over the slides), and whether the two
runs wrote byte-identical maps, GeoJSON and RLE.

Projection (printed, not measured): 1,000 HuBMAP-size slides (25,000 x 30,000 px at 0.5 µm/px, 60 %
tissue) from the measured costs: tiles per slide from the model's plan (working scale, tile, overlap),
seconds per tile (forward plus reading, added up: conservative, since the engine's reader threads overlap
them), the measured per-slide overhead; on 1, 8 and 64 workers of 2 cores each; with a GPU per worker the
forward pass is taken as free and reading and normalising the tiles (measured here) bounds the rate,
which is the most a GPU could give.

    python benchmarks/bench_batch.py                 # 8 slides of 6144 px (~5 min on 2 cores)
    python benchmarks/bench_batch.py --slides 4 --size 4096

Results: JSON on stdout and bench-out/bench_batch.json.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HUBMAP_SLIDE = (25_000, 30_000)  # px at 0.5 µm/px
HUBMAP_MPP = 0.5
TISSUE = 0.6


def make_slides(folder: Path, count: int, size: int) -> list[Path]:
    from napari_hubmap.synth import SynthSpec, write_synthetic_tiff

    folder.mkdir(parents=True, exist_ok=True)
    slides = []
    for seed in range(count):
        path = folder / f"cohort-{size}-{seed}.tif"
        if not path.exists():  # with a pyramid, as scanners write them
            write_synthetic_tiff(path, SynthSpec(width=size, height=size, seed=seed, tissue_fraction=TISSUE, mpp=HUBMAP_MPP),
                                 pyramid=True)
        slides.append(path)
    return slides


def outputs(out: Path, slides: list[Path]) -> dict:
    from napari_hubmap.stores.probability import open_probability

    found = {}
    for slide in slides:
        levels, _ = open_probability(out / f"{slide.stem}.prob.zarr")
        found[slide.stem] = ([np.asarray(level[:]).tobytes() for level in levels],
                             (out / f"{slide.stem}.geojson").read_bytes(), (out / f"{slide.stem}.rle.csv").read_bytes())
    return found


def run(slides, out: Path, workers: int | None) -> dict:
    from napari_hubmap.batch import CohortConfig, run_cohort
    from napari_hubmap.inference import InferenceConfig

    shutil.rmtree(out, ignore_errors=True)
    config = CohortConfig(inference=InferenceConfig(models=["hubmap-default"]))
    started = time.perf_counter()
    lines = run_cohort(slides, out, config, workers=workers)
    wall = time.perf_counter() - started
    errors = [line for line in lines if "error" in line]
    if errors:
        raise SystemExit(f"slides failed: {errors}")
    return {"wall_s": wall, "s_per_slide": wall / len(slides), "tiles": sum(line["tiles"] for line in lines),
            "computed_tiles": sum(line["computed_tiles"] for line in lines), "backend": lines[0]["backend"]}


def tile_costs(slide: Path) -> dict:
    """Seconds per tile of the forward pass (default backend, this process's threads) and of reading and
    normalising a tile at the model's working scale."""
    import torch

    from napari_hubmap.inference.engine import normalise, pick_device, plan_slide
    from napari_hubmap.inference.tile_reader import TileReader
    from napari_hubmap.inference.onnx_backend import onnx_model, resolve_backend
    from napari_hubmap.inference import InferenceConfig
    from napari_hubmap.registry import load_model
    from napari_hubmap.slide import open_slide

    config = InferenceConfig(models=["hubmap-default"])
    model = load_model("hubmap-default")
    backend = resolve_backend(config.backend, pick_device("cpu"))
    runner = onnx_model(model) if backend == "onnx" else model
    with open_slide(slide) as opened:
        plan = plan_slide(opened, [model], config)
    jobs = [j for j in plan.jobs if not j.skipped][:24]
    run = plan.runs[0]
    reader = TileReader(str(slide))
    started = time.perf_counter()
    tiles = [normalise(reader.read(j.y, j.x, run.tile, run.downscale)[None], model.card.normalization) for j in jobs]
    read_s = (time.perf_counter() - started) / len(jobs)
    with torch.inference_mode():
        runner.module(torch.from_numpy(tiles[0]))  # warm-up
        started = time.perf_counter()
        for tile in tiles:
            runner.module(torch.from_numpy(tile))
        forward_s = (time.perf_counter() - started) / len(jobs)
    return {"backend": backend, "forward_s_per_tile": forward_s, "read_s_per_tile": read_s, "tile": run.tile,
            "overlap": run.overlap, "downscale_at_0.5": model.card.working_downscale(HUBMAP_MPP), "threads": torch.get_num_threads()}


def hubmap_tiles(costs: dict) -> int:
    """Computed tiles of one HuBMAP-size slide: the plan's grid at the working scale, times the tissue share."""
    from napari_hubmap.inference.plan import tile_starts

    d = costs["downscale_at_0.5"]
    rows, cols = (len(tile_starts(math.ceil(s / d), costs["tile"], costs["overlap"])) for s in HUBMAP_SLIDE)
    return int(round(rows * cols * TISSUE))


def projection(costs: dict, overhead_s: float) -> list[dict]:
    tiles = hubmap_tiles(costs)
    rows = []
    for workers in (1, 8, 64):
        for gpu in (False, True):
            # CPU: forward and reading added up (conservative: the engine's reader threads overlap them); GPU:
            # the forward taken as free, so reading bounds the rate (optimistic for the GPU)
            per_tile = costs["read_s_per_tile"] if gpu else costs["forward_s_per_tile"] + costs["read_s_per_tile"]
            per_slide = tiles * per_tile + overhead_s
            hours = 1000 * per_slide / workers / 3600
            rows.append({"workers": workers, "gpu": gpu, "tiles_per_slide": tiles, "s_per_slide": per_slide,
                         "hours_for_1000": hours})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=8)
    parser.add_argument("--size", type=int, default=6144)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=ROOT / "bench-out" / "batch")
    args = parser.parse_args()
    slides = make_slides(args.dir / "slides", args.slides, args.size)
    costs = tile_costs(slides[0])  # also exports the ONNX graph once, before any timing
    here = run(slides, args.dir / "here", None)
    cluster = run(slides, args.dir / "cluster", args.workers)
    identical = outputs(args.dir / "here", slides) == outputs(args.dir / "cluster", slides)
    forward_per_slide = here["computed_tiles"] / len(slides) * costs["forward_s_per_tile"]
    overhead = max(0.0, here["s_per_slide"] - forward_per_slide)
    result = {"slides": len(slides), "size": args.size, "here": here, "cluster": cluster,
              "cluster_speedup": here["wall_s"] / cluster["wall_s"], "identical": identical, "tile_costs": costs,
              "overhead_s_per_slide": overhead, "projection_1000_hubmap_slides": projection(costs, overhead)}
    print(json.dumps(result))
    (args.dir.parent / "bench_batch.json").write_text(json.dumps(result, indent=1))
    print(f"here {here['wall_s']:.1f} s, {args.workers} workers {cluster['wall_s']:.1f} s, identical {identical}, "
          f"overhead {overhead:.2f} s/slide, forward {costs['forward_s_per_tile']:.3f} s/tile, read "
          f"{costs['read_s_per_tile']:.3f} s/tile", file=sys.stderr)
    for row in result["projection_1000_hubmap_slides"]:
        print(f"  {row['workers']:>3} workers {'GPU' if row['gpu'] else 'CPU'}: {row['tiles_per_slide']} tiles/slide, "
              f"{row['s_per_slide']:.1f} s/slide, {row['hours_for_1000']:.2f} h for 1,000 slides", file=sys.stderr)


if __name__ == "__main__":
    main()

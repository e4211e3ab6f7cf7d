"""Post-processing speed: live-preview latency on a 2048 x 2048 view, whole-slide throughput and RSS.

Probability maps: the glomeruli of the synthetic 16384 x 12288 PAS slide (the same slide as
bench_open / bench_inference, seed 1) rasterised at downscale 2 (8192 x 6144), blurred (sigma 3 px)
with noise and a faint tissue background, written as a ``<slide>.prob.zarr`` as the engine writes
it; and that map tiled 3 x 3 (24576 x 18432, as for a 49152 x 36864 slide) for memory vs size.

(1) Live latency: what one slider move costs in the Post-processing panel, i.e. ``live_labels`` on
    a 2048 x 2048 window of level 0 (zarr read included), for: threshold alone; threshold + hole
    filling + minimum size (the panel's default); + watershed with distance markers; + watershed
    with h-maxima. Median and worst over 8 windows holding glomeruli, 3 runs each (after a warm-up).
    Targets: threshold < 100 ms, watershed < 500 ms.
(2) Whole slide: ``postprocess_slide`` (default settings, and with watershed) in a fresh process
    each: seconds, megapixels/s at the map's scale, objects, peak RSS (VmHWM).

    python benchmarks/bench_postprocess.py            # ~3 min on 2 cores
    python benchmarks/bench_postprocess.py --quick    # small map, smoke run

Results: JSON lines on stdout, a table on stderr, bench-out/bench_postprocess.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_inference import hwm_rss_mb
from bench_open import make_slide  # benchmarks/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]
VIEW = 2048
DOWNSCALE = 2
CONFIGS = {
    "threshold": dict(threshold=0.5, fill_holes=False),
    "threshold+holes+min size": dict(threshold=0.5, fill_holes=True, min_size=200),
    "watershed (distance)": dict(threshold=0.5, min_size=200, watershed=True, min_distance=10),
    "watershed (h-maxima)": dict(threshold=0.5, min_size=200, watershed=True, markers="h-maxima", h=2.0),
}


def peak_rss_mb() -> float:
    """VmHWM (see bench_inference.hwm_rss_mb): unlike ru_maxrss it does not carry over the parent's
    RSS at fork, and this script's parent process makes the maps."""
    return hwm_rss_mb()


def make_map(slide: Path, out: Path, tiles: int = 1) -> Path:
    """The probability store of ``slide``'s glomeruli at downscale 2, tiled ``tiles`` x ``tiles``."""
    if (out / "progress.json").exists():
        return out
    import numpy as np
    from scipy import ndimage

    from napari_hubmap.annotations import load_labels
    from napari_hubmap.stores.probability import CHUNK, ProbabilityStore
    from napari_hubmap.slide import open_slide

    with open_slide(slide) as s:
        full = (s.height, s.width)
    mask, _ = load_labels(slide.with_suffix(".geojson"), full, downsample=DOWNSCALE)
    rng = np.random.default_rng(0)
    prob = ndimage.gaussian_filter((mask > 0).astype(np.float32), 3)
    prob = np.clip(0.9 * prob + 0.08 + rng.normal(0, 0.04, prob.shape).astype(np.float32), 0, 1)
    small = np.rint(prob * 255).astype(np.uint8)
    h, w = small.shape
    shape = (h * tiles, w * tiles)
    settings = {"slide": str(slide), "slide_shape": [full[0] * tiles, full[1] * tiles], "out_shape": list(shape), "models": []}
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    store = ProbabilityStore.open_for_run(tmp, shape, float(DOWNSCALE), settings, "bench")
    row = np.tile(small, (1, tiles))
    for y0 in range(0, shape[0], CHUNK):
        band = row[np.arange(y0, min(y0 + CHUNK, shape[0])) % h]
        store.write_rows(y0, band)
    store.mark_rows_done(shape[0])
    store.save_progress(complete=True)
    tmp.rename(out)
    return out


def measure_live(args: dict) -> dict:
    import numpy as np

    from napari_hubmap._widgets.postprocess_panel import live_labels
    from napari_hubmap.postprocess import PostprocessConfig  # noqa: F401  (imports before timing)
    from napari_hubmap.stores.labels import open_labels  # noqa: F401
    from napari_hubmap.stores.probability import open_probability

    levels, _ = open_probability(args["map"])
    h, w = levels[0].shape
    rng = np.random.default_rng(1)
    windows = []
    while len(windows) < 8:  # windows holding glomeruli
        y0, x0 = int(rng.integers(0, h - VIEW)), int(rng.integers(0, w - VIEW))
        if (np.asarray(levels[-1][y0 >> (len(levels) - 1): (y0 + VIEW) >> (len(levels) - 1),
                                  x0 >> (len(levels) - 1): (x0 + VIEW) >> (len(levels) - 1)]) > 128).any():
            windows.append((y0, y0 + VIEW, x0, x0 + VIEW))
    rows = {}
    for name, fields in CONFIGS.items():
        config = PostprocessConfig(**fields)
        live_labels(levels, 0, windows[0], config)  # warm-up
        times, objects = [], []
        for window in windows:
            for _ in range(3):
                t0 = time.perf_counter()
                labels = live_labels(levels, 0, window, config)
                times.append(time.perf_counter() - t0)
            objects.append(int(labels.max()))
        rows[name] = {"median_ms": 1000 * float(np.median(times)), "max_ms": 1000 * max(times), "objects_per_view": float(np.mean(objects))}
    t0 = time.perf_counter()
    for window in windows:
        y0, y1, x0, x1 = window
        np.asarray(levels[0][y0:y1, x0:x1])
    rows["zarr read alone"] = {"median_ms": 1000 * (time.perf_counter() - t0) / len(windows)}
    return rows


def measure_slide(args: dict) -> dict:
    from napari_hubmap.postprocess import PostprocessConfig, postprocess_slide

    base = peak_rss_mb()
    out = Path(args["out"])
    shutil.rmtree(out, ignore_errors=True)
    result = postprocess_slide(args["map"], out, PostprocessConfig(**CONFIGS[args["config"]]))
    shutil.rmtree(out, ignore_errors=True)
    return {**result.as_dict(), "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": base}


MEASURES = {"live": measure_live, "slide": measure_slide}


def child(kind: str, args: dict) -> dict:
    cmd = [sys.executable, __file__, "--measure", kind, json.dumps(args)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"measurement {kind} failed ({out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small map (smoke run)")
    parser.add_argument("--dir", type=Path, default=ROOT / "bench-out")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(MEASURES[args.measure[0]](json.loads(args.measure[1]))))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    width, height = (8192, 6144) if args.quick else (16384, 12288)
    slide = make_slide(width, height, args.dir)
    maps = [make_map(slide, args.dir / f"{slide.stem}.prob.zarr")]
    if not args.quick:
        maps.append(make_map(slide, args.dir / f"{slide.stem}-3x3.prob.zarr", tiles=3))
    results = []
    live = child("live", {"map": str(maps[0])})
    for name, row in live.items():
        results.append({"part": "live", "config": name, "view": f"{VIEW}x{VIEW}", **row})
    for prob_map in maps:
        for name in ("threshold+holes+min size", "watershed (distance)"):
            row = child("slide", {"map": str(prob_map), "config": name, "out": str(args.dir / "bench-labels.zarr")})
            results.append({"part": "slide", "config": name, "map": prob_map.name, **row})
    for row in results:
        print(json.dumps(row))
    err = sys.stderr
    print(f"\nlive preview of a {VIEW} x {VIEW} view (map of {slide.name} at downscale {DOWNSCALE})", file=err)
    for r in (r for r in results if r["part"] == "live"):
        worst = f"  worst {r['max_ms']:6.0f} ms  {r['objects_per_view']:5.1f} objects/view" if "max_ms" in r else ""
        print(f"    {r['config']:<26} median {r['median_ms']:6.0f} ms{worst}", file=err)
    print("\nwhole slide                                    map           seconds    Mpx/s  objects  peak RSS", file=err)
    for r in (r for r in results if r["part"] == "slide"):
        h, w = r["shape"]
        print(f"    {r['config']:<26} {r['map']:<28} {w}x{h}  {r['seconds']:6.1f} s {r['megapixels_per_s']:6.1f} {r['objects']:7d}  {r['peak_rss_mb']:6.0f} MB", file=err)
    (args.dir / ("bench_postprocess_quick.json" if args.quick else "bench_postprocess.json")).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

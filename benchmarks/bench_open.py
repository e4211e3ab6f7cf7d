"""Time to first view and peak RSS of opening a flat BigTIFF: napari-hubmap vs napari's built-in reader.

First view = open the file + read a 2048 x 2048 viewport at full resolution (slide centre) + read
the whole lowest pyramid level (what napari shows zoomed out). Each measurement runs in a fresh
process (peak RSS is that process's ru_maxrss) after evicting the file from the page cache
(posix_fadvise DONTNEED), so reads come from disk.

    python benchmarks/bench_open.py                       # 32768 x 24576, both readers
    python benchmarks/bench_open.py --sizes 16384x12288 32768x24576 49152x36864 --skip-builtin
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

ROOT = Path(__file__).resolve().parents[1]
VIEWPORT = 2048


def evict_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_levels(reader: str, path: str) -> list:
    """The pyramid levels napari would get from ``reader`` (level 0 first)."""
    if reader == "napari-hubmap":
        from napari_hubmap.slide import open_slide

        return open_slide(path).levels
    from napari_builtins.io import napari_get_reader

    data = napari_get_reader(path)(path)[0][0]
    return data if isinstance(data, list) else [data]


def measure(reader: str, path: str) -> dict:
    import importlib

    import numpy as np

    importlib.import_module("napari_hubmap.slide" if reader == "napari-hubmap" else "napari_builtins.io")
    base_rss = peak_rss_mb()  # imports are not part of opening a slide
    t0 = time.perf_counter()
    levels = open_levels(reader, path)
    t_open = time.perf_counter()
    cy, cx = levels[0].shape[0] // 2, levels[0].shape[1] // 2
    half = VIEWPORT // 2
    view = np.asarray(levels[0][cy - half : cy + half, cx - half : cx + half])
    t_view = time.perf_counter()
    lowest = np.asarray(levels[-1][:])
    t_low = time.perf_counter()
    assert view.shape[:2] == (VIEWPORT, VIEWPORT)
    return {
        "open_s": t_open - t0,
        "viewport_s": t_view - t_open,
        "lowest_level_s": t_low - t_view,
        "first_view_s": t_low - t0,
        "lowest_level_shape": list(lowest.shape[:2]),
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_imports_mb": base_rss,
    }


def run_measurement(reader: str, path: Path, cache: Path, cold: bool = True) -> dict:
    if cold:
        evict_from_page_cache(path)
    cmd = [sys.executable, __file__, "--measure", reader, str(path)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "NAPARI_HUBMAP_CACHE": str(cache)}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_pyramid_cache(path: Path, cache: Path) -> float:
    cli = Path(sys.executable).with_name("napari-hubmap")
    env = {**os.environ, "NAPARI_HUBMAP_CACHE": str(cache)}
    evict_from_page_cache(path)
    t0 = time.perf_counter()
    subprocess.run([str(cli), "pyramid", str(path)], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def median_run(reader: str, path: Path, cache: Path, repeat: int, cold: bool = True) -> dict:
    runs = sorted((run_measurement(reader, path, cache, cold) for _ in range(repeat)), key=lambda r: r["first_view_s"])
    return runs[len(runs) // 2]


def make_slide(width: int, height: int, folder: Path) -> Path:
    path = folder / f"synth-flat-{width}x{height}.tif"
    if not path.exists():
        cli = Path(sys.executable).with_name("napari-hubmap")
        t0 = time.perf_counter()
        subprocess.run(
            [str(cli), "synth", str(path), "--width", str(width), "--height", str(height), "--seed", "1"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        mpx = width * height / 1e6
        print(f"generated {path.name}: {mpx:.0f} Mpx in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["32768x24576"], help="WIDTHxHEIGHT of the flat slides")
    parser.add_argument("--dir", type=Path, default=ROOT / "bench-out", help="where the big slides are written (kept between runs)")
    parser.add_argument("--skip-builtin", action="store_true", help="do not measure napari's built-in reader")
    parser.add_argument("--repeat", type=int, default=3, help="cold runs per reader (median reported)")
    parser.add_argument("--measure", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        reader, path = args.measure
        print(json.dumps(measure(reader, path)))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    results = []
    for size in args.sizes:
        width, height = (int(v) for v in size.lower().split("x"))
        path = make_slide(width, height, args.dir)
        cache = args.dir / "pyramid-cache"
        shutil.rmtree(cache, ignore_errors=True)
        rows = [
            ("napari-hubmap", "cold, no cache", median_run("napari-hubmap", path, cache, args.repeat)),
            ("napari-hubmap", "warm, no cache", median_run("napari-hubmap", path, cache, args.repeat, cold=False)),
        ]
        if not args.skip_builtin:
            rows.append(("napari-builtin", "cold", median_run("napari-builtin", path, cache, 1)))
        build_s = build_pyramid_cache(path, cache)
        print(f"pyramid cache of {width}x{height} built in {build_s:.1f} s", file=sys.stderr)
        rows.append(("napari-hubmap", "cold, cache built", median_run("napari-hubmap", path, cache, args.repeat)))
        for reader, condition, best in rows:
            row = {"reader": reader, "condition": condition, "slide": f"{width}x{height}", "file_gb": path.stat().st_size / 1e9, "cache_build_s": build_s, **best}
            results.append(row)
            print(json.dumps(row))
    print("\nreader          condition          slide         first view   open    viewport  lowest level  peak RSS", file=sys.stderr)
    for r in results:
        print(
            f"{r['reader']:<15} {r['condition']:<18} {r['slide']:<12} {r['first_view_s']:8.2f} s {r['open_s']:6.2f} s {r['viewport_s']:7.2f} s "
            f"{r['lowest_level_s']:9.2f} s {r['peak_rss_mb']:8.0f} MB",
            file=sys.stderr,
        )
    (args.dir / "bench_open.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

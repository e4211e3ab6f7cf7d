"""Trainer data-loader efficiency: training steps fed by the real loader vs by pre-loaded batches.

Efficiency = samples/s of training steps whose batches come from the trainer's own loader (loop.py
``tile_loader``: ``TileDataset`` + ``TileSampler`` + ``training_augmentation`` through a DataLoader with
the trainer's default workers, reading and augmenting while the model trains) divided by samples/s of
the same steps on pre-loaded batches (the same batches, drawn and augmented once beforehand and kept
in memory as tensors). Target: >= 0.9, i.e. loading costs the training loop at most 10 %.

Both sides run loop.py ``training_step``, as ``_train_epoch`` does: the preset's network (default effnet-unet,
``build_module(preset_card(...))``), AdamW, ``bce_dice_loss``, zero_grad/backward/step and the EMA
update, batch 8 of 256 px tiles; 2 warm-up steps (worker start-up, first batches, AdamW's state) are
not timed, then 20 steps are. Data: ``load_sources`` on ../shared/data (beside the repository) at
2 µm/px (each folder's and image's µm/px from benchmarks/shared-data-mpp.json unless --mpp says otherwise), the
training split of the trainer's default settings. The pre-loaded batches are drawn through the same
loader with 0 workers (that also times loading and augmenting alone). Loader workers fill their
prefetch queue during the warm-up, so ``ratio_with_startup`` is given too: every step counted from
the loader's creation, as an epoch of the trainer pays it (its workers are not persistent).

The measurements alternate (ABBA: real, pre-loaded, pre-loaded, real, ... over ``--rounds``) and the
median of each is kept, so that CPU frequency drift does not bias the ratio. Before each one the
script waits for the CPUs to be idle (--wait-idle), measures the CPU time other processes took
meanwhile (others_cpu_share, steal included) and repeats it (--retries) when that exceeds 10 %.

    python benchmarks/bench_training.py                    # default workers (~7 min on 2 cores)
    python benchmarks/bench_training.py --workers 0,1,2    # the ratio for each setting (~15 min)

Results: a JSON summary line on stdout, a table on stderr, bench-out/bench_training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench_inference import MAX_OTHERS, cpu_busy_seconds, wait_for_idle  # benchmarks/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MPP = json.loads((Path(__file__).with_name("shared-data-mpp.json")).read_text())
TARGET = 0.9


def own_cpu_seconds() -> float:
    """CPU time of this process and its finished children (the loader's workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Trainer:
    """The model and optimizer state one training step needs, as loop.py holds them."""

    module: object
    optimizer: object
    scaler: object
    ema: object
    device: object
    steps_done: int = 0

    def step(self, images, masks) -> float:
        """One step of loop.py ``training_step`` with the EMA update (no learning-rate schedule)."""
        from napari_hubmap.training.losses import bce_dice_loss
        from napari_hubmap.training.loop import training_step

        loss = training_step(self.module, self.optimizer, self.scaler, bce_dice_loss, images, masks, self.device)
        self.ema.update(self.module, self.steps_done)
        self.steps_done += 1
        return float(loss)  # waits for the device, as the loop's loss report does


def make_trainer(config, card, device) -> Trainer:
    import torch

    from napari_hubmap.registry import build_module
    from napari_hubmap.training.loop import EMA

    torch.manual_seed(config.seed)
    module = build_module(card).to(device)
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
    return Trainer(module.train(), optimizer, scaler, EMA(module, config.ema_decay), device)


def trainer_loader(config, card, train, device, workers: int):
    """The trainer's own loader (loop.py ``tile_loader``, epoch 0) with ``workers`` loader processes."""
    from napari_hubmap.training.loop import tile_loader

    return tile_loader(config.replace(workers=workers), train, card.normalization, device, epoch=0)


def preload(loader) -> tuple[list, float]:
    """Every batch of ``loader``, in memory; and the seconds drawing and augmenting them took."""
    started = time.perf_counter()
    batches = list(loader)
    return batches, time.perf_counter() - started


def timed_steps(trainer: Trainer, make_batches, warmup: int) -> dict:
    """Train on every batch ``make_batches()`` gives (a loader or a list); time the steps after ``warmup``.

    ``all_samples_per_s`` counts every step from the call of ``make_batches`` on (loader set-up and
    worker start-up included, which the trainer pays every epoch: its workers are not persistent).
    """
    started = time.perf_counter()
    first_batch_s = timed_from = ended = None
    samples = total = 0
    for index, (images, masks) in enumerate(make_batches()):
        if first_batch_s is None:
            first_batch_s = time.perf_counter() - started
        if index == warmup:
            timed_from = time.perf_counter()
        trainer.step(images, masks)
        total += len(images)
        if index >= warmup:
            samples += len(images)
            ended = time.perf_counter()
    seconds = ended - timed_from
    return {"samples": samples, "seconds": seconds, "samples_per_s": samples / seconds, "first_batch_s": first_batch_s,
            "all_samples_per_s": total / (ended - started)}


def measured(run, wait_idle: float, retries: int) -> dict:
    """``run()`` after waiting for idle CPUs, with the share other processes took; repeated while
    that share is above MAX_OTHERS (at most ``retries`` times), the least disturbed kept."""
    best = None
    for attempt in range(1 + retries):
        idle = wait_for_idle(wait_idle)
        busy0, own0, t0 = cpu_busy_seconds(), own_cpu_seconds(), time.perf_counter()
        result = run()
        busy1, own1, wall = cpu_busy_seconds(), own_cpu_seconds(), time.perf_counter() - t0
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall * (os.cpu_count() or 1))
        result.update(idle_before=idle, others_cpu_share=others, attempt=attempt + 1, cpu_util=(own1 - own0) / wall)
        if best is None or others < best["others_cpu_share"]:
            best = result
        if others <= MAX_OTHERS:
            break
        print(f"{result['kind']}: other processes used {others:.0%} of the CPUs, measuring again", file=sys.stderr)
    return best


def round_orders(workers: list[int], rounds: int) -> list[list[tuple]]:
    """(kind, workers) of each round; ABBA: every other round reversed, so a steady drift touches
    both sides alike."""
    kinds = [("real", w) for w in workers] + [("preloaded", None)]
    return [kinds if r % 2 == 0 else kinds[::-1] for r in range(rounds)]


def measure_rounds(trainer: Trainer, loader_of, batches: list, args, workers: list[int]) -> list[dict]:
    """Every (kind, workers) of every round, each measured as ``measured`` does."""
    rows = []
    for r, order in enumerate(round_orders(workers, args.rounds)):
        for kind, w in order:
            make_batches = (lambda w=w: loader_of(w)) if kind == "real" else (lambda: batches)
            row = measured(lambda kind=kind, make_batches=make_batches: {
                "kind": kind, **timed_steps(trainer, make_batches, args.warmup)}, args.wait_idle, args.retries)
            row.update(round=r, workers=w)
            rows.append(row)
            print(f"round {r} {kind} workers={w}: {row['samples_per_s']:.2f} samples/s "
                  f"(others {row['others_cpu_share']:.0%})", file=sys.stderr)
    return rows


def median_of(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def summary_by_workers(rows: list[dict], workers: list[int]) -> tuple[dict, list[dict]]:
    """Medians of the pre-loaded runs, and per loader setting: median real rate, ratio, per-round ratios."""
    pre = sorted((r for r in rows if r["kind"] == "preloaded"), key=_round)
    pre_rates = {"samples_per_s": median_of(pre, "samples_per_s"), "all_samples_per_s": median_of(pre, "all_samples_per_s")}
    out = []
    for w in workers:
        real = sorted((r for r in rows if r["kind"] == "real" and r["workers"] == w), key=_round)
        rate, rate_all = median_of(real, "samples_per_s"), median_of(real, "all_samples_per_s")
        out.append({"workers": w, "real_samples_per_s": rate, "ratio": rate / pre_rates["samples_per_s"],
                    "ratio_per_round": [a["samples_per_s"] / b["samples_per_s"] for a, b in zip(real, pre)],
                    "real_all_samples_per_s": rate_all, "ratio_with_startup": rate_all / pre_rates["all_samples_per_s"],
                    "first_batch_s": median_of(real, "first_batch_s")})
    return pre_rates, out


def _round(row: dict) -> int:
    return row["round"]


def print_table(summary: dict) -> None:
    err = sys.stderr
    print(f"\ntrainer data-loader efficiency: {summary['preset']}, batch {summary['batch']}, tile {summary['tile']}, "
          f"{summary['steps']} timed steps (+{summary['warmup']} warm-up), {summary['rounds']} rounds, "
          f"{summary['device']}, {summary['torch_threads']} torch threads, {summary['train_images']} training images", file=err)
    print(f"    pre-loaded batches: {summary['preloaded_samples_per_s']:.2f} samples/s "
          f"({summary['preloaded_all_samples_per_s']:.2f} with warm-up); loading and augmenting alone, "
          f"in one process: {summary['load_only_samples_per_s']:.1f} samples/s", file=err)
    print("    workers  real loader  ratio  per round      with start-up: rate  ratio  first batch", file=err)
    for w in summary["by_workers"]:
        rounds = " ".join(f"{r:.3f}" for r in w["ratio_per_round"])
        mark = "  (trainer default)" if w["workers"] == summary["default_workers"] else ""
        print(f"    {w['workers']:>7}  {w['real_samples_per_s']:7.2f} /s  {w['ratio']:5.3f}  {rounds:<14} "
              f"{w['real_all_samples_per_s']:18.2f}  {w['ratio_with_startup']:5.3f}  {w['first_batch_s']:9.2f} s{mark}", file=err)
    print("    round  kind       workers  samples/s  others_cpu_share  cpu_util", file=err)
    for r in summary["rows"]:
        workers = "-" if r["workers"] is None else r["workers"]
        print(f"    {r['round']:>5}  {r['kind']:<10} {workers:>7}  {r['samples_per_s']:9.2f}  "
              f"{r['others_cpu_share']:16.1%}  {r['cpu_util']:8.2f}", file=err)
    verdict = "meets" if summary["meets_target"] else "misses"
    print(f"    ratio with {summary['ratio_workers']} worker(s): {summary['ratio']:.3f} ({verdict} the target >= {TARGET})",
          file=err)


def mpp_overrides(pairs: list[str]) -> dict[str, float]:
    """MPP with ``NAME=VALUE`` pairs on top."""
    return {**MPP, **{name: float(value) for name, value in (pair.split("=", 1) for pair in pairs)}}


def load_training_images(data: Path, config, mpp: dict[str, float]) -> list:
    from napari_hubmap.training import load_sources
    from napari_hubmap.training.split import split_samples

    samples = load_sources([data], downscale=config.downscale, target_mpp=config.target_mpp, mpp_overrides=mpp)
    return split_samples(samples, config)[0]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="training data (default: ../shared/data beside the repository)")
    parser.add_argument("--mpp", action="append", default=[], metavar="NAME=VALUE",
                        help="µm per pixel of a data folder or image, on top of benchmarks/shared-data-mpp.json")
    parser.add_argument("--preset", default="effnet-unet")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each kind (ABBA order), median kept")
    parser.add_argument("--workers", default=None, help="loader workers, comma-separated (default: the trainer's default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (as the trainer's --device)")
    parser.add_argument("--dir", type=Path, default=ROOT / "bench-out", help="where bench_training.json goes")
    parser.add_argument("--wait-idle", type=float, default=120.0, metavar="S",
                        help="before each measurement wait up to S seconds for the CPUs to be >= 90%% idle (shared machines)")
    parser.add_argument("--retries", type=int, default=2, help="repeat a measurement disturbed by other processes up to N times")
    return parser.parse_args()


def make_summary(args, config, device, train, load_only: float, rows: list[dict], workers: list[int]) -> dict:
    import torch

    pre_rates, by_workers = summary_by_workers(rows, workers)
    default_workers = config.workers  # the trainer's default (config leaves it as it is)
    headline = next((w for w in by_workers if w["workers"] == default_workers), by_workers[0])
    return {
        "bench": "training", "preset": args.preset, "batch": args.batch, "tile": args.tile, "steps": args.steps,
        "warmup": args.warmup, "rounds": args.rounds, "device": str(device), "torch_threads": torch.get_num_threads(),
        "data": str(args.data), "mpp": mpp_overrides(args.mpp), "train_images": len(train), "default_workers": default_workers,
        "preloaded_samples_per_s": pre_rates["samples_per_s"], "preloaded_all_samples_per_s": pre_rates["all_samples_per_s"],
        "load_only_samples_per_s": load_only, "ratio": headline["ratio"], "ratio_workers": headline["workers"],
        "target": TARGET, "meets_target": headline["ratio"] >= TARGET,
        "others_cpu_share_max": max(r["others_cpu_share"] for r in rows), "by_workers": by_workers, "rows": rows,
    }


def main() -> None:
    args = parse_args()
    from napari_hubmap.training import TrainConfig, preset_card
    from napari_hubmap.training.loop import pick_device

    started = time.perf_counter()
    config = TrainConfig(preset=args.preset, tile=args.tile, batch=args.batch,
                         samples_per_epoch=(args.warmup + args.steps) * args.batch)
    workers = [int(w) for w in args.workers.split(",")] if args.workers else [config.workers]
    device = pick_device(args.device)
    card = preset_card(args.preset, f"bench-{args.preset}", tile=config.infer_tile, downscale=config.downscale,
                       target_mpp=config.target_mpp)
    train = load_training_images(args.data, config, mpp_overrides(args.mpp))
    trainer = make_trainer(config, card, device)
    batches, load_s = preload(trainer_loader(config, card, train, device, 0))
    load_only = sum(len(images) for images, _ in batches) / load_s
    rows = measure_rounds(trainer, lambda w: trainer_loader(config, card, train, device, w), batches, args, workers)
    summary = {**make_summary(args, config, device, train, load_only, rows, workers),
               "seconds": time.perf_counter() - started}
    print(json.dumps(summary), flush=True)
    print_table(summary)
    args.dir.mkdir(parents=True, exist_ok=True)
    (args.dir / "bench_training.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

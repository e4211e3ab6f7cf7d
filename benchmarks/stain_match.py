"""Test-time stain matching, measured on the PAS sources left out (issue 12; `models/README.md`, *Matching a
slide's stain to the model's PAS*).

Each model of a ``loso-<PAS source>`` run is scored on the images it never saw twice, in one pass at its card's
picks (as ``generalisation.py score`` does, plain): as they are, and with each image's tissue colour moved onto the
mean colour of the PAS images the run trained on (Reinhard, :mod:`napari_hubmap.stain_standard`; each PAS source
weighted alike, whatever its number of images). That is what a per-slide "match the stain to the model's PAS"
choice would do for a user whose lab stains differently.

    python benchmarks/stain_match.py loso-pas-tiles bench-out/generalisation/loso-pas-tiles-s26 [...]

One JSON line per model with both figures; ``--reference-of RUN`` takes the reference from another run's PAS training
images (the shipped model: ``all``); ``--nearest`` moves each image onto the PAS training source nearest its own colour
instead of onto their mean.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generalisation as g  # noqa: E402

PAS_SOURCES = ("hubmap-pas", "pas-tiles", "hubmap-16x")
"""The shared data's PAS sources (``kidney-he`` is H&E; synthetic regions are not trained on as a source here)."""


def source_references(run: str, card) -> dict:
    """The mean tissue colour of each PAS source ``run`` trains on."""
    from napari_hubmap.stain_standard import mean_stats, tissue_stats

    held = set(g.run_plan(run)[2])
    by_source = {}
    for sample in g.run_samples(run, card):
        if sample.source in PAS_SOURCES and sample.name not in held:
            by_source.setdefault(sample.source, []).append(tissue_stats(sample.image))
    return {source: mean_stats(stats) for source, stats in by_source.items()}


def matched_figures(scorer, samples: list, references: dict) -> tuple[dict, dict]:
    """Plain figures of ``scorer`` on ``samples`` with each image moved onto the one of ``references`` (name ->
    LabStats) nearest its own tissue colour, and how many images went to each (an image without tissue as it is)."""
    from napari_hubmap.stain_standard import standardise, tissue_stats

    moved, chosen = [], {}
    for sample in samples:
        stats = tissue_stats(sample.image)
        if stats is not None:
            name = min(references, key=lambda s: np.linalg.norm(np.subtract(references[s].mean, stats.mean)))
            chosen[name] = chosen.get(name, 0) + 1
            sample = dataclasses.replace(sample, image=standardise(sample.image, stats, references[name]))
        moved.append(sample)
    return g.held_out_figures(scorer, moved), chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="the held-out task, e.g. loso-pas-tiles")
    parser.add_argument("models", nargs="+", type=Path, help="model folders trained for that task")
    parser.add_argument("--reference-of", default=None, help="take the PAS reference from this run's training images")
    parser.add_argument("--nearest", action="store_true",
                        help="move each image onto the PAS training source nearest its colour, not onto their mean")
    args = parser.parse_args(argv)
    from napari_hubmap.stain_standard import mean_stats

    for folder in args.models:
        scorer = g.Scorer([folder])
        samples = g.held_out_samples(args.run, scorer.card)
        references = source_references(args.reference_of or args.run, scorer.card)
        if args.nearest:
            matched, chosen = matched_figures(scorer, samples, references)
            print(json.dumps({"run": args.run, "model": str(folder), "nearest": True, "chosen": chosen,
                              "references": {s: r.as_dict() for s, r in references.items()}, "matched": matched}),
                  flush=True)
            continue
        reference = mean_stats(references.values())
        line = {"run": args.run, "model": str(folder), "reference_sources": sorted(references),
                "reference": reference.as_dict(), "as_scanned": g.held_out_figures(scorer, samples),
                "matched": matched_figures(scorer, samples, {"mean": reference})[0]}
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

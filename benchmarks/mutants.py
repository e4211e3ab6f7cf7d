"""Mutation check of the suite (issue 17): plant one plausible bug at a time, run the tests that should see
it, and report whether they went red.

Each mutant is one exact text replacement in one file of a scratch clone of this checkout (the working tree
is never touched); the named tests run there with this checkout's ``.venv`` (``PYTHONPATH`` puts the
clone's package first, also for the CLI child processes). A mutant counts as *caught* when those tests fail
(pytest exit code 1: failures, not a collection error); the clone is reset after each one. The unmutated
clone runs the same tests first: they must pass, else a red mutant would prove nothing.

    python benchmarks/mutants.py                 # every mutant; one JSON line each, a table at the end
    python benchmarks/mutants.py lovasz-signs    # some of them, by name
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    before: str
    after: str
    tests: tuple[str, ...]
    bug: str


MUTANTS = (
    Mutant("flat-blend", "napari_hubmap/inference/plan.py", "axis = axis / axis.max()", "axis = np.ones(size)",
           ("tests/test_inference.py::test_tiled_blend_equals_one_whole_image_pass",),
           "tiles blended with equal weights: their edges (padding artefacts) count as much as their centres"),
    Mutant("sampler-uniform", "napari_hubmap/training/sampling.py",
           "rng.random() < self.positive_fraction", "rng.random() < 0.0",
           ("tests/test_training.py::test_sampler_prefers_glomeruli_but_keeps_empty_tissue",),
           "positive_fraction ignored: tiles drawn uniformly, glomeruli no more often than by chance"),
    Mutant("sources-unbalanced", "napari_hubmap/training/sampling.py",
           "weights = np.array([a / totals[n] for a, n in zip(areas, sources)]) / len(totals)",
           "weights = areas.copy()",
           ("tests/test_training.py::test_sampler_balances_sources",),
           "images drawn by area alone: a folder of large images drowns the others"),
    Mutant("lovasz-signs", "napari_hubmap/training/losses.py", "signs = 2.0 * truth - 1.0", "signs = 1.0 - 2.0 * truth",
           ("tests/test_training.py::test_losses_prefer_the_right_answer",
            "tests/test_training.py::test_each_loss_trains_a_small_network_to_find_discs"),
           "Lovász hinge with the classes swapped: it trains towards the inverted mask"),
    Mutant("focal-weight", "napari_hubmap/training/losses.py", "(1 - p_t) ** gamma", "p_t ** gamma",
           ("tests/test_training.py::test_losses_prefer_the_right_answer",
            "tests/test_training.py::test_each_loss_trains_a_small_network_to_find_discs"),
           "focal loss weighing the easy pixels up instead of down"),
    Mutant("mask-not-augmented", "napari_hubmap/training/sampling.py",
           'image, mask = out["image"], out["mask"]', 'image, mask = out["image"], mask',
           ("tests/test_augment.py::test_the_training_dataset_hands_out_the_augmented_mask_with_its_image",),
           "the training dataset flips and warps the image but keeps the original mask"),
    Mutant("no-exchange", "napari_hubmap/atomic.py", 'if not sys.platform.startswith("linux"):\n        return False',
           "if True:\n        return False", ("tests/test_atomic.py",),
           "folders replaced by delete-then-rename: a crash between the two leaves neither"),
    Mutant("mpp-ratio-inverted", "napari_hubmap/registry/card.py", "return self.target_mpp / float(slide_mpp)",
           "return float(slide_mpp) / self.target_mpp", ("tests/test_registry.py", "tests/test_mpp.py"),
           "a slide finer than the model's scale is upsampled instead of reduced"),
    Mutant("no-normalisation", "napari_hubmap/inference/normalisation.py", "return (data - mean) / std",
           "return data", ("tests/test_default_model.py::test_default_model_through_predict_postprocess_evaluate",),
           "tiles reach the network without the card's mean / std"),
    Mutant("rle-order-unchecked", "napari_hubmap/annotations/rle.py",
           "    _check_order(starts, starts + lengths, source, where)\n", "", ("tests/test_rle.py",),
           "RLE runs that overlap or go backwards accepted (and silently merged)"),
    Mutant("rle-zero-based", "napari_hubmap/annotations/rle.py", "pairs[0::2] = starts + 1", "pairs[0::2] = starts",
           ("tests/test_rle.py",), "RLE written 0-based: every run one pixel early in Kaggle's reader"),
    Mutant("pyramid-cancel-ignored", "napari_hubmap/slide/pyramid_cache.py",
           'check_cancelled(state.cancel, "pyramid cache build cancelled")', "pass",
           ("tests/test_slide_reader.py::test_background_build_can_be_cancelled_without_leaving_a_cache",),
           "Cancel on a pyramid-cache build does nothing: the build runs to the end"),
    Mutant("drop-marks-accepted", "napari_hubmap/_widgets/review_panel.py",
           'self.drop_button.clicked.connect(lambda: self.mark("dropped"))',
           'self.drop_button.clicked.connect(lambda: self.mark("accepted"))', ("tests/test_review_widget.py",),
           "the Review panel's Drop button records the tile as accepted"),
    Mutant("overlap-option-ignored", "napari_hubmap/cli/predict.py", "overlap=args.overlap,", "overlap=None,",
           ("tests/test_cli_options.py::test_predict_tile_and_overlap_change_the_plan",),
           "predict --overlap parsed but not passed on"),
)


def run_tests(clone: Path, tests: tuple[str, ...]) -> tuple[int, float, str]:
    env = {**os.environ, "PYTHONPATH": str(clone), "PYTHONUNBUFFERED": "1"}
    command = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", str(PYTHON), "-m", "pytest", "-q", "-x", "-p",
               "no:cacheprovider", *tests]
    start = time.monotonic()
    done = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    failure = lines[0] if lines else "" if done.returncode == 0 else done.stdout.strip()[-200:]
    return done.returncode, round(time.monotonic() - start, 1), failure


def try_mutant(clone: Path, mutant: Mutant, baselines: dict) -> dict:
    """Plant ``mutant``, run its tests, restore; ``baselines`` holds the unmutated runs by test list (mutants
    sharing their tests share one baseline run)."""
    path = clone / mutant.file
    text = path.read_text()
    assert text.count(mutant.before) == 1, f"{mutant.name}: {mutant.before!r} is not once in {mutant.file}"
    if mutant.tests not in baselines:
        baselines[mutant.tests] = run_tests(clone, mutant.tests)
    baseline, base_seconds, baseline_failure = baselines[mutant.tests]
    path.write_text(text.replace(mutant.before, mutant.after))
    try:
        code, seconds, first_failure = run_tests(clone, mutant.tests)
    finally:
        subprocess.run(["git", "checkout", "-q", "--", mutant.file], cwd=clone, check=True)
    return {"mutant": mutant.name, "file": mutant.file, "bug": mutant.bug, "tests": list(mutant.tests),
            "baseline_passed": baseline == 0, "caught": baseline == 0 and code == 1, "exit": code,
            "seconds": seconds + base_seconds, "first_failure": first_failure,
            "baseline_failure": None if baseline == 0 else baseline_failure}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to try (default: all)")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants: {', '.join(sorted(unknown))}")
    results = []
    with tempfile.TemporaryDirectory(prefix="mutants-") as scratch:
        clone = Path(scratch) / ROOT.name  # beside a link to ../shared, as in the checkout
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        shared = ROOT.parent / "shared"
        if shared.exists():
            (Path(scratch) / "shared").symlink_to(shared)
        baselines = {}
        for mutant in chosen:
            result = try_mutant(clone, mutant, baselines)
            print(json.dumps(result), flush=True)
            results.append(result)
    print("\n| mutant | planted bug | caught by | |\n|---|---|---|---|")
    for r in results:
        verdict = "caught" if r["caught"] else ("baseline red" if not r["baseline_passed"] else "MISSED")
        print(f"| {r['mutant']} | {r['bug']} | {r['first_failure'] or ', '.join(r['tests'])} | {verdict} |")
    return 0 if all(r["caught"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The long fuzz campaign of issue 16 (binary formats): tests/test_fuzz_binary.py under the ``campaign``
hypothesis profile, with a recorded seed, printing per property the examples tried and the failures.

    python benchmarks/fuzz_binary_campaign.py                 # FUZZ_EXAMPLES (default 2000) a property
    python benchmarks/fuzz_binary_campaign.py --examples 300 --seed 12345 --json campaign.json

Rerun a campaign exactly with the seed it printed. Recorded runs (300 examples a property): seed 20261203
found the all-empty-chunk allocation and a slow empty-tile decode, seed 20261204 a page listing too few
tiles (each now a named regression test); seed 20261205, after the fixes: 14 properties, 4200 examples,
0 failures, 51 s. The hypothesis example database goes to a temporary
folder, so nothing is written into the checkout. Exit status: pytest's (0 when no property failed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_FILE = "tests/test_fuzz_binary.py"
_PROPERTY = re.compile(r"^tests/test_fuzz_binary\.py::(\w+):\s*$")
_COUNTS = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid")
_FAILED = re.compile(r"^FAILED tests/test_fuzz_binary\.py::(\w+)")


def parse_statistics(output: str) -> dict[str, dict[str, int]]:
    """{property: {tried, failing, invalid}} summed over hypothesis' phases, from --hypothesis-show-statistics."""
    found: dict[str, dict[str, int]] = {}
    current = None
    for line in output.splitlines():
        name = _PROPERTY.match(line)
        if name:
            current = found.setdefault(name.group(1), {"tried": 0, "failing": 0, "invalid": 0})
            continue
        counts = _COUNTS.search(line)
        if counts and current is not None:
            passing, failing, invalid = (int(v) for v in counts.groups())
            current["tried"] += passing + failing
            current["failing"] += failing
            current["invalid"] += invalid
    return found


def run_campaign(examples: int, seed: int, extra: list[str]) -> tuple[int, str, float]:
    with tempfile.TemporaryDirectory(prefix="fuzz-binary-") as storage:
        env = {**os.environ, "HYPOTHESIS_PROFILE": "campaign", "FUZZ_EXAMPLES": str(examples),
               "HYPOTHESIS_STORAGE_DIRECTORY": storage,
               "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:logging", "-rf",
                   TEST_FILE, f"--hypothesis-seed={seed}", "--hypothesis-show-statistics", *extra]
        start = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        return done.returncode, done.stdout + done.stderr, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=int(os.environ.get("FUZZ_EXAMPLES", "2000")))
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: a random one, printed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--log", type=Path, default=None, help="write pytest's whole output here")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (e.g. -k rle)")
    args = parser.parse_args(argv)
    seed = random.SystemRandom().randrange(2**32) if args.seed is None else args.seed
    print(f"fuzz_binary_campaign: {args.examples} examples a property, --hypothesis-seed={seed}", flush=True)
    code, output, seconds = run_campaign(args.examples, seed, args.pytest_args)
    stats = parse_statistics(output)
    failed_tests = {m.group(1) for line in output.splitlines() if (m := _FAILED.match(line))}
    print(f"{'property':58s} {'tried':>7s} {'invalid':>7s} {'failures':>8s}")
    for name, counts in stats.items():
        failures = counts["failing"] if counts["failing"] else int(name in failed_tests)
        print(f"{name:58s} {counts['tried']:7d} {counts['invalid']:7d} {failures:8d}")
    tried = sum(c["tried"] for c in stats.values())
    print(f"{'total':58s} {tried:7d} {'':7s} {len(failed_tests):8d} failed tests  ({seconds:.0f} s, pytest exit {code})")
    if args.log:
        args.log.write_text(output)
    if failed_tests:  # the shrunk failing cases, as hypothesis reports them
        print("\n".join(line for line in output.splitlines() if "Failing test case" in line or line.startswith("E ")
                        or re.match(r"^\s*\|?\s+(claims=|'\w+': |\w+=)", line)))
    if args.json:
        record = {"examples": args.examples, "seed": seed, "seconds": round(seconds, 1), "exit": code,
                  "properties": stats, "failed_tests": sorted(failed_tests)}
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Fuzz campaign of the JSON readers (issue 16, JSON part): tests/test_fuzz_json.py with many random examples.

Runs the file under the hypothesis profile "campaign" (tests/conftest.py: FUZZ_EXAMPLES examples a property,
not derandomised, the suite's per-call deadline) with a recorded ``--hypothesis-seed``, and prints per property
the examples tried (every phase: explicit, reuse, generate, shrink) and the failing ones, then the totals. Run
again with the same ``--seed`` and ``--examples`` to replay a campaign.

    python benchmarks/fuzz_json_campaign.py                      # 2000 examples a property, a fresh seed
    python benchmarks/fuzz_json_campaign.py --examples 500 --seed 1234

Results: a table on stdout, bench-out/fuzz_json_campaign.json (seed, examples, per-property figures), and the
exit status of pytest (0 when no property failed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = "tests/test_fuzz_json.py"
_PROPERTY = re.compile(r"^(?:\S+::)?(test_\w+):\s*$")
_COUNTS = re.compile(r"(\d+) passing(?: examples?)?, (\d+) failing(?: examples?)?, (?:and )?(\d+) invalid")
"""A phase's line of --hypothesis-show-statistics (both the older "examples" and the newer wording)."""


def run_campaign(examples: int, seed: int) -> tuple[int, str, float]:
    """(pytest's exit status, its output, seconds) of one campaign run."""
    env = {**os.environ, "HYPOTHESIS_PROFILE": "campaign", "FUZZ_EXAMPLES": str(examples),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "pytest", TESTS, "-q", "-p", "no:cacheprovider", f"--hypothesis-seed={seed}",
               "--hypothesis-show-statistics"]  # the named regressions run too: seconds
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr, time.perf_counter() - start


def per_property(output: str) -> dict[str, dict[str, int]]:
    """{property: {"examples", "failing", "invalid"}} summed over the phases hypothesis's statistics list."""
    figures: dict[str, dict[str, int]] = {}
    current = None
    for line in output.splitlines():
        match = _PROPERTY.match(line.strip())
        if match:
            current = figures.setdefault(match.group(1), {"examples": 0, "failing": 0, "invalid": 0})
            continue
        counts = _COUNTS.search(line)
        if counts and current is not None:
            passing, failing, invalid = map(int, counts.groups())
            current["examples"] += passing + failing + invalid
            current["failing"] += failing
            current["invalid"] += invalid
    return figures


def failed_tests(output: str) -> set[str]:
    return set(re.findall(r"^FAILED \S+::(test_\w+)", output, flags=re.MULTILINE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=int(os.environ.get("FUZZ_EXAMPLES", "2000")))
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: a fresh one, printed)")
    args = parser.parse_args(argv)
    seed = random.SystemRandom().randrange(2**32) if args.seed is None else args.seed
    print(f"fuzz_json_campaign: {args.examples} examples a property, --hypothesis-seed={seed}", flush=True)
    status, output, seconds = run_campaign(args.examples, seed)
    figures, failed = per_property(output), failed_tests(output)
    width = max(map(len, figures), default=10)
    print(f"{'property':<{width}}  examples  failing  outcome")
    for name, counts in sorted(figures.items()):
        outcome = "FAILED" if name in failed else "passed"
        print(f"{name:<{width}}  {counts['examples']:>8}  {counts['failing']:>7}  {outcome}")
    total = sum(c["examples"] for c in figures.values())
    regressions = failed - figures.keys()
    print(f"{'total':<{width}}  {total:>8}  {sum(c['failing'] for c in figures.values()):>7}  "
          f"{len(failed & figures.keys())} of {len(figures)} properties failed, {seconds:.0f} s")
    if regressions:
        print(f"named regression tests failed: {', '.join(sorted(regressions))}")
    if status != 0:
        print(output[-6000:], file=sys.stderr)  # the falsifying examples and their tracebacks
    out = ROOT / "bench-out" / "fuzz_json_campaign.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"seed": seed, "examples": args.examples, "seconds": round(seconds, 1),
                               "pytest_status": status, "properties": figures, "failed": sorted(failed)}, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())

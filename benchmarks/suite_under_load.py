"""The whole test suite, several times in a row, while busy loops keep every core loaded (issue 16).

The equivalent of ``stress --cpu N`` beside ``scripts/test.sh`` (no extra package): ``--busy`` processes
(default: one per core) spin in pure Python at normal priority for the whole run, and the suite runs
``--rounds`` times (default 3) under ``xvfb-run`` exactly as ``scripts/test.sh`` runs it (after ruff and
the import contracts, which are not timing-sensitive and run once). Every round must pass; the script
prints one JSON line per round (passed, failed, skipped, seconds) and exits 1 if any round failed.

    python benchmarks/suite_under_load.py                 # 3 rounds, 2 busy loops on this 2-core machine
    python benchmarks/suite_under_load.py --rounds 1 -- -k edits   # extra pytest arguments after --
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"
SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?)")


def spin() -> None:
    """One core's worth of work until killed."""
    value = 0
    while True:
        value = (value * 1103515245 + 12345) % 2147483648


def run_round(pytest_args: list[str]) -> dict:
    """One suite run under Xvfb; its counts and wall time."""
    command = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", str(PYTHON), "-m", "pytest", "-q", "-p",
               "no:cacheprovider", *pytest_args]
    start = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.monotonic() - start
    tail = done.stdout.strip().splitlines()[-1:] or [""]
    counts = {kind.rstrip("s") if kind.startswith("error") else kind: int(n) for n, kind in SUMMARY.findall(tail[0])}
    failures = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {"returncode": done.returncode, "passed": counts.get("passed", 0), "failed": counts.get("failed", 0),
            "errors": counts.get("error", 0), "skipped": counts.get("skipped", 0), "seconds": round(seconds, 1),
            "failures": failures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 2, help="busy-loop processes (default: one per core)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    for check in ([".venv/bin/ruff", "check", "."], [".venv/bin/lint-imports"]):
        subprocess.run(check, cwd=ROOT, check=True, capture_output=True)
    loops = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for loop in loops:
        loop.start()
    results = []
    try:
        for round_number in range(1, args.rounds + 1):
            result = {"round": round_number, "busy_loops": args.busy, **run_round(args.pytest_args)}
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        for loop in loops:
            loop.kill()
    return 0 if all(r["returncode"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

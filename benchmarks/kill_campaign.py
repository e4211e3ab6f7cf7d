"""SIGKILL campaign (issue 16): every operation killed at ``--count`` seeded random moments.

For predict, postprocess, export, train (tiny model, 3 epochs) and the pyramid cache build it runs the
uninterrupted reference once, then ``--count`` times: copies the template (inputs and the previous
result), starts the CLI command, waits until it shows it is working, sleeps a seeded delay drawn
uniformly over the rest of the reference's measured duration, SIGKILLs it, and judges the store left
(see ``tests/kill_helpers.py``): the previous result, the finished one, or a partial one; then re-runs
the command, which must give a result identical to the reference (arrays equal, exports byte-identical;
a model folder always loads). Project edits: the edit stream of ``tests/project_edit_stream.py``
killed at seeded moments must keep exactly edits 1..S with S covering every edit older than the window.

Prints one line per kill (seed, delay, outcome) and the table: operation, kills, interrupted (the
kill stopped unfinished work), previous / complete / resumed-identical / FAILED, temporaries left
(hidden partial folders: right after the kill / after the re-run), seed. Exits 1 on any FAILED.

    PYTHONPATH=. python benchmarks/kill_campaign.py --count 20 --seed 16 [--ops predict,train] [--keep DIR]

Inputs: predict a 1400 x 1200 synthetic slide (tiny U-Net, flips, torch on the CPU); postprocess the map
of a 2400 x 2000 one (watershed, blocks of 256, threshold 0.5 over the labels of 0.3); export GeoJSON over
an older file; train 3 epochs of 8 tiles; pyramid a 5000 x 4200 single-level TIFF; edits a 0.5 s window.
2026-12-03, 2 loaded cores, 0 FAILED in 240 kills: ``--seed 16`` (before the pyramid clean-up) and
``--seed 17`` (the fixed code), 20 kills per operation each:

    seed 17        | kills | interrupted | previous | complete | resumed-identical | FAILED | temporaries
    predict        | 20    | 10          | 0        | 10       | 10                | 0      | 0 / 0
    postprocess    | 20    | 18          | 18       | 2        | 0                 | 0      | 4 / 4
    export         | 20    | 15          | 15       | 5        | 0                 | 0      | 0 / 0
    train          | 20    | 15          | 9        | 5        | 6                 | 0      | 1 / 1
    pyramid        | 20    | 7           | 7        | 13       | 0                 | 0      | 7 / 0
    project-edits  | 20    | 19          | 20       | 0        | 0                 | 0      | 0 / 0

(seed 16: interrupted 10 / 15 / 19 / 17 / 17 / 20, outcomes alike, no FAILED.) The postprocess temporaries
are ``atomic_path``'s hidden ``.labels.zarr.<pid>-*.partial.zarr`` folders of killed runs; since they carry the
writer's pid, the next write of the same target removes those of dead writers (``--ops postprocess --seed 17``
again: 16 of 20 kills interrupted, 10 temporaries after the kills, 0 after the re-runs). The train one is a
``.m.checkpoint.removed-<pid>`` folder: no data lost, but nothing removes it yet.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from kill_helpers import ALL_OPS, EditsOp, ExportOp, KillRecord, kill_once, reference, table  # noqa: E402

OPS = [*ALL_OPS, EditsOp.name]


def campaign(names: list[str], count: int, seed: int, root: Path) -> list[KillRecord]:
    records: list[KillRecord] = []
    refs = {}
    for index, name in enumerate(names):
        started = time.monotonic()
        if name == EditsOp.name:
            op = EditsOp()
            template = op.make_template(root)
            kills = [_said(op.kill_once(template, root / f"edits-{k}", seed * 1000 + index * 100 + k)) for k in range(count)]
        else:
            op = ExportOp(refs["postprocess"].template) if name == "export" and "postprocess" in refs else ALL_OPS[name]()
            refs[name] = ref = reference(op, root)
            shutil.rmtree(ref.finished)
            print(f"{name}: reference {ref.span:.2f} s after start-up", flush=True)
            kills = [_said(kill_once(op, ref, root / f"{name}-{k}", seed * 1000 + index * 100 + k)) for k in range(count)]
        print(f"{name}: {count} kills in {time.monotonic() - started:.0f} s", flush=True)
        records += kills
    return records


def _said(record: KillRecord) -> KillRecord:
    print(f"  {record.op} seed={record.seed} delay={record.delay:.3f}s interrupted={record.interrupted} "
          f"{record.outcome} {record.detail}", flush=True)
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="kills per operation")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated, of {', '.join(OPS)}")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    names = [n for n in args.ops.split(",") if n]
    unknown = sorted(set(names) - set(OPS))
    if unknown:
        parser.error(f"unknown operations {unknown}")
    if "export" in names and "postprocess" in names:  # export reuses postprocess's template
        names.remove("export")
        names.insert(names.index("postprocess") + 1, "export")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kill-campaign-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        records = campaign(names, args.count, args.seed, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(table(records, args.seed))
    return 1 if any(r.outcome == "FAILED" for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())

"""SIGKILL at random moments of a command, and the oracle of what must be on disk afterwards.

Shared by ``tests/test_kill_anywhere.py`` (a few seeded kills per operation, in CI) and
``benchmarks/kill_campaign.py`` (many). An operation (:class:`KillOp`) is a CLI command over a work
folder copied from a template that holds its inputs and the *previous* complete result (or none).
One kill (:func:`kill_once`): start the command, wait until it shows it has started (a line printed,
a file made: never a blind sleep that a loaded machine could outlast), sleep a seeded extra delay drawn
over the rest of the uninterrupted run's measured duration, SIGKILL its process group. Then the
on-disk state must be the previous result, the finished result, or a partial one; the operation's
own checks run (a model folder loads, a store opens); the same command is run again (the resume) and
must leave a result identical to the uninterrupted run's (arrays equal, exported files byte-identical).

Project edits have no re-run: :class:`EditsOp` checks that the edits store holds exactly the edits
1..S of the killed stream (S covering every edit older than the autosave window), i.e. the previous
complete save.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
CLI = [sys.executable, "-m", "napari_hubmap.cli"]
OUTCOMES = ("previous", "complete", "resumed-identical", "FAILED")


ENV_LOCK = threading.Lock()  # kills run in threads; one check sets a variable of this process for a moment


def child_env(**extra: str) -> dict:
    """The environment of a child: this checkout's package first on its path, one thread (determinism)."""
    with ENV_LOCK:
        path = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
        return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def digest_arrays(arrays) -> str:
    """One hash of arrays' shapes, dtypes and values, in order."""
    sha = hashlib.sha256()
    for array in arrays:
        values = np.ascontiguousarray(np.asarray(array))
        sha.update(f"{values.shape}{values.dtype}".encode())
        sha.update(values.tobytes())
    return sha.hexdigest()


@dataclass
class Watch:
    """A running child: its output lines (stdout and stderr merged) read by a thread as they come."""

    process: subprocess.Popen
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self.reader.join(10)
        return code


def start(argv: list[str], cwd: Path, env: dict) -> Watch:
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    return Watch(process)


class KillOp:
    """A command to kill; subclasses say how to make its inputs and how to read its result."""

    name = ""
    rerun_when_complete = True  # False where a re-run over the finished result is refused, not a no-op

    def make_template(self, template: Path) -> None:
        """Inputs and the previous result (if any) in ``template``, made once."""
        raise NotImplementedError

    def argv(self, work: Path) -> list[str]:
        raise NotImplementedError

    def env(self, work: Path) -> dict:
        return child_env()

    def started(self, work: Path, lines: list[str]) -> bool:
        """True once the command is doing the work (not just importing)."""
        raise NotImplementedError

    def state(self, work: Path) -> str | None:
        """A digest of the result on disk (None: no result); a partial result digests as ``partial:...``."""
        raise NotImplementedError

    def check_after_kill(self, work: Path) -> None:
        """What must hold right after a kill (a model folder loads, ...); raises AssertionError."""

    def leftovers(self, work: Path) -> list[str]:
        """Temporaries a kill left behind (reported, not failures: the next run ignores them)."""
        return sorted(p.name for p in work.rglob("*") if ".partial" in p.name and p.parent.name.find(".partial") < 0)


@dataclass
class Reference:
    """The uninterrupted run: its result's digest, the previous result's, and seconds from start-up to exit."""

    template: Path
    previous: str | None
    result: str
    span: float
    finished: Path  # the folder the uninterrupted run worked in


def run_to_end(op: KillOp, work: Path, timeout: float = 600) -> tuple[int, float, list[str]]:
    """Run ``op``'s command in ``work`` to its end: (exit code, seconds after it started working, output)."""
    watch = start(op.argv(work), work, op.env(work))
    ready = _wait_started(op, work, watch, timeout)
    code = watch.finish(timeout)
    return code, time.monotonic() - ready, watch.lines


def _wait_started(op: KillOp, work: Path, watch: Watch, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while not op.started(work, watch.lines):
        if watch.process.poll() is not None and not op.started(work, watch.lines):
            watch.reader.join(10)
            if op.started(work, watch.lines):
                break
            raise AssertionError(f"{op.name}: ended (code {watch.process.returncode}) before it started working: "
                                 + "\n".join(watch.lines[-20:]))
        if time.monotonic() > deadline:
            raise AssertionError(f"{op.name}: not started after {timeout} s")
        time.sleep(0.005)
    return time.monotonic()


def reference(op: KillOp, root: Path) -> Reference:
    """Make ``op``'s template and run it once uninterrupted in a copy."""
    template = root / f"{op.name}-template"
    template.mkdir(parents=True)
    op.make_template(template)
    previous = op.state(template)
    work = root / f"{op.name}-reference"
    shutil.copytree(template, work, symlinks=True)
    code, span, lines = run_to_end(op, work)
    assert code == 0, f"{op.name} reference run failed ({code}):\n" + "\n".join(lines[-30:])
    result = op.state(work)
    assert result is not None and not result.startswith("partial:"), f"{op.name}: reference left no result"
    assert result != previous, f"{op.name}: the reference run changed nothing: a kill could not be told apart"
    return Reference(template, previous, result, span, work)


@dataclass
class KillRecord:
    op: str
    seed: int
    delay: float
    interrupted: bool  # the process was still working at the kill and the result was not the finished one
    outcome: str
    detail: str = ""
    leftovers: int = 0  # temporaries right after the kill
    leftovers_after: int | None = None  # and after the re-run (None: no re-run)


def kill_once(op: KillOp, ref: Reference, work: Path, seed: int, timeout: float = 600, spread: float = 1.0,
              rerun_previous: bool = True, retries: int = 0) -> KillRecord:
    """One seeded kill of ``op`` in a fresh copy of its template, judged; ``work`` is removed after a pass.
    The kill comes a delay drawn uniformly from [0, ``spread`` x the reference's span] after start-up.
    ``rerun_previous`` False: a kill that left the previous result untouched is not re-run (that re-run
    is the reference run again; CI saves the time, the campaign does not). ``retries``: when the command had
    already exited at the kill (this run was faster than the reference, which ran beside other work), start
    again from the template with half the delay, up to this many times; the kill judged is the last one."""
    delay = float(np.random.default_rng(seed).uniform(0.0, spread * ref.span))
    for attempt in range(retries + 1):
        if attempt:
            shutil.rmtree(work)
            delay /= 2
        alive = _start_and_kill(op, ref, work, delay, timeout)
        if alive:
            break
    record = KillRecord(op.name, seed, round(delay, 3), False, "FAILED")
    try:
        _judge(op, ref, work, alive, record, timeout, rerun_previous)
    except AssertionError as error:
        record.outcome, record.detail = "FAILED", str(error)[:2000]
    if record.outcome != "FAILED":
        shutil.rmtree(work, ignore_errors=True)
    return record


def _start_and_kill(op: KillOp, ref: Reference, work: Path, delay: float, timeout: float) -> bool:
    """Copy the template to ``work``, start ``op``, SIGKILL it ``delay`` s after it started working:
    whether it was still running at the kill."""
    shutil.copytree(ref.template, work, symlinks=True)
    watch = start(op.argv(work), work, op.env(work))
    try:
        _wait_started(op, work, watch, timeout)
        time.sleep(delay)
        return watch.process.poll() is None
    finally:
        with _suppress_gone():
            os.killpg(watch.process.pid, signal.SIGKILL)
        watch.finish(60)


def _judge(op: KillOp, ref: Reference, work: Path, alive: bool, record: KillRecord, timeout: float,
           rerun_previous: bool) -> None:
    after = op.state(work)
    record.interrupted = alive and after != ref.result
    record.leftovers = len(op.leftovers(work))
    op.check_after_kill(work)
    if after not in (ref.previous, ref.result) and not (after or "").startswith("partial:"):
        raise AssertionError(f"after the kill the result is neither the previous, the finished nor a partial one: {after}")
    if after == ref.result and not op.rerun_when_complete:
        record.outcome = "complete"
        return
    if after == ref.previous and not rerun_previous:
        record.outcome = "previous"
        return
    watch = start(op.argv(work), work, op.env(work))
    code = watch.finish(timeout)
    assert code == 0, f"the re-run failed ({code}):\n" + "\n".join(watch.lines[-30:])
    resumed = op.state(work)
    record.leftovers_after = len(op.leftovers(work))
    assert resumed == ref.result, f"the re-run's result differs from the uninterrupted run's ({resumed} != {ref.result})"
    record.outcome = "previous" if after == ref.previous else "complete" if after == ref.result else "resumed-identical"


class _suppress_gone:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, trace):
        return kind is not None and issubclass(kind, ProcessLookupError)


def table(records: list[KillRecord], seed: int) -> str:
    """operation, kills, interrupted, one column per outcome, temporaries left, seed."""
    head = ["operation", "kills", "interrupted", *OUTCOMES, "temporaries left (after kill / after re-run)", "seed"]
    rows = [head]
    for name in dict.fromkeys(r.op for r in records):
        mine = [r for r in records if r.op == name]
        rows.append([name, len(mine), sum(r.interrupted for r in mine), *(sum(r.outcome == o for r in mine) for o in OUTCOMES),
                     f"{sum(r.leftovers for r in mine)} / {sum(r.leftovers_after or 0 for r in mine)}", seed])
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    return "\n".join(" | ".join(str(v).ljust(w) for v, w in zip(row, widths)) for row in rows)


# ------------------------------------------------------------------------------------------ operations


def tiny_model_folder(folder: Path) -> Path:
    """The tiny U-Net of the CLI tests, imported into ``folder/models/tiny``."""
    sys.path.insert(0, str(TESTS))
    from test_cli import tiny_model

    return tiny_model(folder)


def synthetic_slide(path: Path, width: int, height: int, seed: int) -> Path:
    from napari_hubmap.synth import SynthSpec, write_synthetic_tiff

    write_synthetic_tiff(path, SynthSpec(width=width, height=height, seed=seed))
    return path


class PredictOp(KillOp):
    """``napari-hubmap predict`` of one slide (no previous map): the re-run resumes the partial map."""

    name = "predict"

    def __init__(self, width: int = 1400, height: int = 1200):
        self.size = (width, height)

    def make_template(self, template: Path) -> None:
        tiny_model_folder(template)
        synthetic_slide(template / "slide.tif", *self.size, seed=5)

    def argv(self, work: Path) -> list[str]:
        return [*CLI, "predict", "slide.tif", "--model", "models/tiny", "--out", "pred", "--backend", "torch",
                "--device", "cpu", "--tta", "flips", "--batch", "2"]

    def started(self, work: Path, lines: list[str]) -> bool:
        return (work / "pred" / "slide.prob.zarr").exists()

    def state(self, work: Path) -> str | None:
        return probability_state(work / "pred" / "slide.prob.zarr")


def probability_state(path: Path) -> str | None:
    from napari_hubmap.stores.probability import open_probability

    if not path.exists():
        return None
    levels, meta = open_probability(path)  # a killed store must still open
    complete = meta.get("progress", {}).get("complete", False)
    return ("" if complete else "partial:") + digest_arrays(level[:] for level in levels)


class PostprocessOp(KillOp):
    """``napari-hubmap postprocess`` at threshold 0.5 over the labels of threshold 0.3 (the previous)."""

    name = "postprocess"

    def __init__(self, prob_map: Path | None = None):
        self.prob_map = prob_map  # a finished map to post-process (default: predict one of a 2400 x 2000 slide)

    def make_template(self, template: Path) -> None:
        if self.prob_map is not None:
            shutil.copytree(self.prob_map, template / "slide.prob.zarr")
            self._postprocess(template, "0.3")
            return
        tiny_model_folder(template)
        synthetic_slide(template / "slide.tif", 2400, 2000, seed=6)
        done = subprocess.run([*CLI, "predict", "slide.tif", "--model", "models/tiny", "--out", ".", "--backend",
                               "torch", "--device", "cpu", "--tta", "none"], cwd=template, env=child_env(),
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        self._postprocess(template, "0.3")

    def _postprocess(self, work: Path, threshold: str) -> None:
        done = subprocess.run(self._argv(threshold), cwd=work, env=child_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]

    @staticmethod
    def _argv(threshold: str) -> list[str]:
        return [*CLI, "postprocess", "slide.prob.zarr", "--out", "labels.zarr", "--threshold", threshold,
                "--min-size", "0", "--block", "256", "--watershed"]

    def argv(self, work: Path) -> list[str]:
        return self._argv("0.5")

    def started(self, work: Path, lines: list[str]) -> bool:
        return any(line.startswith("postprocess") for line in lines)  # the progress line on stderr

    def state(self, work: Path) -> str | None:
        from napari_hubmap.stores.labels import open_labels

        path = work / "labels.zarr"
        if not path.exists():
            return None
        levels, meta = open_labels(path)
        return digest_arrays(level[:] for level in levels) + json.dumps(meta.get("postprocess"), sort_keys=True)


class ExportOp(KillOp):
    """``napari-hubmap export --format geojson`` over an older GeoJSON: the old bytes or byte-identical ones.
    The export is one quick write: the kill moment is drawn from the spawn on (start-up included)."""

    name = "export"
    OLD = b'{"type": "FeatureCollection", "features": []}\n'

    def __init__(self, postprocessed: Path | None = None):
        self.postprocessed = postprocessed  # a PostprocessOp template to take the labels from

    def make_template(self, template: Path) -> None:
        if self.postprocessed is None:
            PostprocessOp().make_template(template)
        else:
            shutil.copytree(self.postprocessed, template, dirs_exist_ok=True, symlinks=True)
        (template / "labels.geojson").write_bytes(self.OLD)

    def argv(self, work: Path) -> list[str]:
        return [*CLI, "export", "labels.zarr", "--format", "geojson", "--out", "labels.geojson"]

    def started(self, work: Path, lines: list[str]) -> bool:
        return True

    def state(self, work: Path) -> str | None:
        path = work / "labels.geojson"
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


TRAIN_ARGS = ["--epochs", "3", "--samples-per-epoch", "8", "--batch", "4", "--tile", "64", "--infer-tile", "64",
              "--workers", "0", "--val-groups", "pC", "--events"]


class TrainOp(KillOp):
    """``napari-hubmap train`` of a tiny model (3 epochs): checkpoint, resume, the same weights."""

    name = "train"
    rerun_when_complete = False  # a finished model folder (no checkpoint) is refused as "already exists"

    def __init__(self, epochs: int = 3):
        self.args = [*TRAIN_ARGS]
        self.args[1] = str(epochs)

    def make_template(self, template: Path) -> None:
        sys.path.insert(0, str(TESTS))
        from training_data import write_disc_folder

        write_disc_folder(template / "discs")

    def argv(self, work: Path) -> list[str]:
        return [*CLI, "train", "--data", "discs", "--out", "models/m", *self.args]

    def env(self, work: Path) -> dict:
        return child_env(NAPARI_HUBMAP_MODELS=str(work / "models"))

    def started(self, work: Path, lines: list[str]) -> bool:
        return any(line.startswith('{"event": "start"') or '"event": "start"' in line for line in lines)

    def state(self, work: Path) -> str | None:
        from napari_hubmap.registry import load_model
        from napari_hubmap.training.checkpoint import checkpoint_folder

        folder = work / "models" / "m"
        if not folder.exists():
            return None
        loaded = load_model(folder)  # a model folder always loads
        weights = digest_arrays(v.numpy() for _, v in sorted(loaded.module.state_dict().items()))
        validation = json.dumps(loaded.card.metrics.get("validation"), sort_keys=True)
        partial = "partial:" if checkpoint_folder(folder).exists() else ""
        return partial + weights + validation

    def check_after_kill(self, work: Path) -> None:
        from napari_hubmap.registry import list_models

        for folder in (work / "models").glob("*"):
            if folder.is_dir() and not folder.name.endswith(".checkpoint") and not folder.name.startswith("."):
                self.state(work)  # raises when the folder does not load
        list_models()  # the registry still lists


class PyramidOp(KillOp):
    """``napari-hubmap pyramid`` of a single-level slide: no cache, or the complete one; a re-run builds it."""

    name = "pyramid"

    def __init__(self, width: int = 5000, height: int = 4200):
        self.size = (width, height)

    def make_template(self, template: Path) -> None:
        import tifffile

        image = np.random.default_rng(7).integers(0, 256, (self.size[1], self.size[0], 3), dtype=np.uint8)
        tifffile.imwrite(template / "flat.tif", image, photometric="rgb")  # strips, one level
        (template / "cache").mkdir()

    def argv(self, work: Path) -> list[str]:
        return [*CLI, "pyramid", "flat.tif"]

    def env(self, work: Path) -> dict:
        return child_env(NAPARI_HUBMAP_CACHE=str(work / "cache"))

    def started(self, work: Path, lines: list[str]) -> bool:
        cache = work / "cache"
        return cache.exists() and any(True for _ in cache.iterdir())

    def state(self, work: Path) -> str | None:
        import zarr

        finals = [p for p in (work / "cache").glob("*.ome.zarr") if ".partial" not in p.name]
        if not finals:
            return None
        assert len(finals) == 1, f"several caches for one slide: {finals}"
        group = zarr.open_group(finals[0], mode="r")
        assert group.attrs["napari_hubmap"]["complete"], f"{finals[0]}: a published cache is not complete"
        levels = sorted((k for k in group.array_keys()), key=int)
        return digest_arrays(group[k][:] for k in levels)

    def check_after_kill(self, work: Path) -> None:
        from napari_hubmap.slide import open_slide

        with ENV_LOCK:
            env = os.environ.get("NAPARI_HUBMAP_CACHE")
            os.environ["NAPARI_HUBMAP_CACHE"] = str(work / "cache")
            try:
                with open_slide(work / "flat.tif") as slide:  # opens, from the cache or the file alone
                    assert slide.height == self.size[1]
            finally:
                if env is None:
                    os.environ.pop("NAPARI_HUBMAP_CACHE")
                else:
                    os.environ["NAPARI_HUBMAP_CACHE"] = env


ALL_OPS = {"predict": PredictOp, "postprocess": PostprocessOp, "export": ExportOp, "train": TrainOp,
           "pyramid": PyramidOp}


# ------------------------------------------------------------------------------------------ project edits


class EditsOp:
    """The edit stream of ``tests/project_edit_stream.py`` killed at a seeded moment: the store must hold
    exactly edits 1..S (nothing torn), S >= every edit older than the autosave window; the project opens."""

    name = "project-edits"

    def __init__(self, window: float = 0.5):
        self.window = window

    def make_template(self, root: Path) -> Path:
        from PIL import Image

        from napari_hubmap.project import add_slide, init_project, open_edits, open_project

        template = root / "edits-template"
        template.mkdir(parents=True)
        image = template / "slide.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 640, 3), dtype=np.uint8)).save(image)
        project = init_project(template / "project", tile=128, downscale=1)
        add_slide(project, image, slide_id="s")
        open_edits(open_project(template / "project"), "s").close()
        return template

    def kill_once(self, template: Path, work: Path, seed: int, span: float = 2.0) -> KillRecord:
        delay = float(np.random.default_rng(seed).uniform(0.0, span))
        shutil.copytree(template, work)
        argv = [sys.executable, str(TESTS / "project_edit_stream.py"), str(work / "project"), "s", str(seed), str(self.window)]
        watch = start(argv, work, child_env())
        try:
            deadline = time.monotonic() + 300
            while "ready" not in watch.lines:
                assert watch.process.poll() is None and time.monotonic() < deadline, "\n".join(watch.lines[-20:])
                time.sleep(0.005)
            time.sleep(delay)
            killed_at = time.monotonic()
        finally:
            with _suppress_gone():
                os.killpg(watch.process.pid, signal.SIGKILL)
            watch.finish(60)
        edits = [(int(a), float(b)) for a, b in (line.split() for line in watch.lines if line[:1].isdigit())]
        record = KillRecord(self.name, seed, round(delay, 3), bool(edits), "FAILED")
        try:
            record.outcome = self._judge(work, seed, edits, killed_at)
        except AssertionError as error:
            record.detail = str(error)[:2000]
        if record.outcome != "FAILED":
            shutil.rmtree(work, ignore_errors=True)
        return record

    def _judge(self, work: Path, seed: int, edits: list[tuple[int, float]], killed_at: float) -> str:
        sys.path.insert(0, str(TESTS))
        import project_edit_stream

        from napari_hubmap.project import open_edits, open_project

        project = open_project(work / "project")  # the manifest and review.json parse, the slide verifies
        store = open_edits(project, "s")
        try:
            durable = store.sequence
            printed = edits[-1][0] if edits else 0
            must = max([k for k, t in edits if t < killed_at - self.window], default=0)
            assert must <= durable <= printed + 1, f"kept edits 1..{durable}; must keep 1..{must}, applied {printed}"
            expected = project_edit_stream.replay(np.zeros(store.shape, np.uint32), seed, durable)
            assert np.array_equal(np.asarray(store), expected), f"the store is not exactly edits 1..{durable}"
        finally:
            store.close()
        return "previous"  # the last complete save, nothing torn

"""Nothing lost on a full disk or a failing one: every writer meets ENOSPC (a real, size-limited tmpfs filled
up) and EIO (injected at Python's file layer) with one clear error naming its target, the previous complete
result untouched (byte for byte), no temporary left behind (a full disk is left no fuller), and a re-run with
space back that gives what a run that never failed gives.

The probability store is written in place and resumes: for it "untouched" means its progress file still
describes finished rows, and the re-run resumes to a byte-identical map. Mounting the tmpfs needs root (CI runs
as root); elsewhere the ENOSPC tests skip and say so, the injected ones still run.
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import io
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_hubmap.atomic import atomic_path, write_failures, write_text_atomic
from napari_hubmap.errors import HubmapInputError, HubmapWriteError

from synthetic_maps import blob_map, write_prob_store
from test_inference import conv_model

NO_SPACE = os.strerror(errno.ENOSPC)
IO_ERROR = os.strerror(errno.EIO)
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ the two faults


class SmallDisk:
    """A tmpfs mounted at ``path``; :meth:`fill` takes its free space (a ballast file), :meth:`unfill` gives it back."""

    def __init__(self, path: Path):
        self.path = path
        self.ballast = path / "ballast.bin"

    def free_bytes(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Write zeros until ``leave`` bytes (rounded down to pages) are free."""
        block = b"\0" * (1 << 16)
        with open(self.ballast, "ab") as fh:
            while (room := self.free_bytes() - leave) > 0:
                try:
                    fh.write(block[: min(len(block), room)])
                    fh.flush()
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break

    def unfill(self) -> None:
        self.ballast.unlink(missing_ok=True)

    def files(self) -> dict[str, bytes]:
        """Every file on the disk but the ballast, by relative path: what a failed write must not change."""
        return {str(p.relative_to(self.path)): p.read_bytes() for p in sorted(self.path.rglob("*"))
                if p.is_file() and p != self.ballast}


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MiB tmpfs (ENOSPC comes from the kernel, not from a mock); skipped where mounting is not allowed."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root (CI runs as root); the injected-fault tests still run")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mountpoint)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs: {made.stderr.strip()}")
    try:
        yield SmallDisk(mountpoint)
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


class FailingWrites:
    """Python's ``open`` (builtins and io, which pathlib, zarr and tifffile use) gives files under ``folder``
    opened for writing a ``write`` (and an ``os.fsync``) that raises EIO once ``budget`` bytes in all have
    been written, so a writer fails part way as with a dying disk; ``names`` limits it to files of those
    names and their temporaries (``.<name>.*``). A context manager: the real functions are back on leaving it."""

    def __init__(self, folder: Path, budget: int = 0, names: tuple[str, ...] = ()):
        self.folder, self.budget, self.names = os.path.abspath(folder), budget, names
        self.written = self.failures = 0
        self.descriptors: set[int] = set()
        real_open, real_fsync = io.open, os.fsync

        def failing_open(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            if not self.covers(file, mode):
                return handle
            self.descriptors.add(handle.fileno())
            return _FailingFile(handle, self)

        def failing_fsync(fd):
            if fd in self.descriptors and self.budget_spent():
                self.failures += 1
                raise OSError(errno.EIO, IO_ERROR)
            return real_fsync(fd)

        self.patches = pytest.MonkeyPatch()
        self.replacements = ((io, "open", failing_open), (builtins, "open", failing_open), (os, "fsync", failing_fsync))

    def __enter__(self) -> "FailingWrites":
        for module, name, replacement in self.replacements:
            self.patches.setattr(module, name, replacement)
        return self

    def __exit__(self, *exc) -> None:
        self.patches.undo()

    def covers(self, file, mode: str) -> bool:
        if isinstance(file, int) or not any(c in mode for c in "wax+"):
            return False
        path = os.path.abspath(os.fsdecode(file))
        name = os.path.basename(path)
        return path.startswith(self.folder + os.sep) and (
            not self.names or name in self.names or name.startswith(tuple(f".{n}." for n in self.names)))

    def budget_spent(self) -> bool:
        return self.written >= self.budget


class _FailingFile:
    def __init__(self, handle, faults: FailingWrites):
        self._handle, self._faults = handle, faults

    def write(self, data):
        if self._faults.budget_spent():
            self._faults.failures += 1
            raise OSError(errno.EIO, IO_ERROR)
        self._faults.written += len(data)
        return self._handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if not self._handle.closed:
            self._faults.descriptors.discard(self._handle.fileno())
        self._handle.close()

    def __iter__(self):
        return iter(self._handle)

    def __getattr__(self, name):
        return getattr(self._handle, name)


def assert_one_clear_error(error: BaseException, target: Path, problem: str, *, or_inside: bool = False) -> None:
    """A HubmapInputError whose one-line text names the target (``or_inside``: or a file in it), never a
    temporary, and the problem."""
    assert isinstance(error, HubmapInputError) and isinstance(error, OSError)
    text = str(error)
    assert "\n" not in text and ".partial" not in text
    named = Path(text.split(": ", 1)[0])
    assert named == target or (or_inside and target in named.parents), text
    assert text.endswith(f"cannot write: {problem}"), text


def fail_on_full_disk(disk: SmallDisk, write, target: Path, *, leave: int = 0, or_inside: bool = False) -> None:
    """Fill ``disk`` (``leave`` bytes free), run ``write``: one clear error, every file as it was, no
    temporary left and no byte less free; then the space comes back."""
    before = disk.files()
    disk.fill(leave)
    free = disk.free_bytes()
    with pytest.raises(HubmapInputError) as caught:
        write()
    assert_one_clear_error(caught.value, target, NO_SPACE, or_inside=or_inside)
    assert disk.files() == before  # the previous result byte for byte, and no partial file beside it
    assert disk.free_bytes() == free
    disk.unfill()


def fail_on_io_error(folder: Path, write, target: Path, *, budget: int = 0, names=()) -> None:
    """Run ``write`` with writes under ``folder`` failing (EIO) after ``budget`` bytes: one clear error,
    every file under ``folder`` as it was; then the disk works again."""
    before = files_under(folder)
    with FailingWrites(folder, budget, names) as faults, pytest.raises(HubmapInputError) as caught:
        write()
    assert faults.failures >= 1
    assert_one_clear_error(caught.value, target, IO_ERROR)
    assert files_under(folder) == before


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ the one rule


def test_atomic_writes_fail_with_one_error_naming_the_target(small_disk):
    target = small_disk.path / "sub" / "table.csv"
    write_text_atomic(target, "old")
    fail_on_full_disk(small_disk, lambda: write_text_atomic(target, "x" * 200_000), target)
    fail_on_io_error(small_disk.path, lambda: write_text_atomic(target, "new"), target)
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and sorted(small_disk.files()) == ["sub/table.csv"]


def test_a_short_write_without_errno_on_a_full_disk_says_no_space(small_disk):
    """tifffile reports a short write as OSError('N requested and M written'), no errno."""
    target = small_disk.path / "mask.tif"
    image = np.random.default_rng(0).integers(0, 255, (600, 600), np.uint8)

    def write():
        with atomic_path(target) as tmp:
            tifffile.imwrite(tmp, image)

    fail_on_full_disk(small_disk, write, target, leave=64 << 10)
    write()
    assert np.array_equal(tifffile.imread(target), image)


def test_errors_about_other_files_are_left_alone(tmp_path):
    """An input that cannot be read is not the target's write failure (and a cancel stays a cancel)."""
    source = tmp_path / "input.bin"
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(source.read_bytes())
    with pytest.raises(PermissionError) as caught:
        with write_failures(tmp_path / "out.bin"):
            raise PermissionError(errno.EACCES, "Permission denied", str(source))
    assert not isinstance(caught.value, HubmapInputError)
    with pytest.raises(InterruptedError):
        with write_failures(tmp_path / "out.bin"):
            raise InterruptedError("cancelled")
    with pytest.raises(HubmapWriteError, match="out.bin: cannot write: Read-only file system"):
        with write_failures(tmp_path / "out.bin"):
            raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".out.bin.x1.partial.bin"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_zarr_write_is_cleaned_up_after_its_sibling_chunk_writes_land(tmp_path, capfd):
    """zarr writes an array's chunks concurrently and raises on the first failure while the others go on: the
    clean-up waits for them, so no chunk lands in a removed temporary and no late asyncio traceback is printed."""
    import gc

    import zarr
    from zarr.storage import LocalStore

    class FirstChunkFails(LocalStore):
        async def set(self, key, value):
            if key.endswith("c/0/0"):
                raise OSError(errno.ENOSPC, NO_SPACE, str(self.root / key))
            if "/c/" in f"/{key}":
                await asyncio.sleep(0.3)  # the siblings land well after the first failure
            return await super().set(key, value)

    target = tmp_path / "out.zarr"
    with pytest.raises(HubmapWriteError, match="out.zarr: cannot write: No space left"):
        with atomic_path(target, is_dir=True) as tmp:
            array = zarr.create_array(FirstChunkFails(tmp), shape=(64, 64), chunks=(16, 16), dtype="u1")
            array[:] = 1
    time.sleep(0.6)
    gc.collect()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert "Traceback" not in capfd.readouterr().err


def test_the_command_line_prints_any_os_error_as_one_line(capsys):
    from argparse import Namespace

    from napari_hubmap.cli import run

    def failing(args):
        raise OSError(errno.EIO, IO_ERROR, "/data/slide.svs")

    assert run(Namespace(func=failing)) == 2
    assert capsys.readouterr().err == f"napari-hubmap: error: /data/slide.svs: {IO_ERROR}\n"


# ------------------------------------------------------------------------------------------ the writers

PROB = blob_map((300, 300), seed=1)


@pytest.fixture
def prob_path(tmp_path):
    return write_prob_store(tmp_path / "inputs" / "kidney.prob.zarr", PROB, downscale=2.0)


def levels_of(path: Path) -> list[bytes]:
    import zarr

    with warnings.catch_warnings():  # a probability store's progress.json is no zarr member
        warnings.simplefilter("ignore")
        group = zarr.open_group(path, mode="r")
        return [np.asarray(group[name][:]).tobytes() for name in sorted(group.array_keys())]


def test_labels_store(small_disk, prob_path, tmp_path):
    from napari_hubmap.postprocess import PostprocessConfig, postprocess_slide

    out = small_disk.path / "kidney.labels.zarr"
    postprocess_slide(prob_path, out, PostprocessConfig(threshold=0.7))  # the previous complete result
    old = levels_of(out)
    write = lambda: postprocess_slide(prob_path, out, PostprocessConfig(threshold=0.5), block=64)  # noqa: E731
    fail_on_full_disk(small_disk, write, out, leave=32 << 10)
    fail_on_io_error(small_disk.path, write, out, budget=20_000)
    assert levels_of(out) == old
    write()
    reference = tmp_path / "ref" / out.name
    postprocess_slide(prob_path, reference, PostprocessConfig(threshold=0.5), block=64)
    assert levels_of(out) == levels_of(reference) != old


@pytest.fixture
def labels_paths(prob_path):
    """Two labels stores of the map (thresholds 0.7 and 0.5): the old export's source and the new one's."""
    from napari_hubmap.postprocess import PostprocessConfig, postprocess_slide

    paths = []
    for threshold in (0.7, 0.5):
        paths.append(prob_path.parent / f"kidney-{threshold}.labels.zarr")
        postprocess_slide(prob_path, paths[-1], PostprocessConfig(threshold=threshold))
    return paths


@pytest.mark.parametrize("fmt, name", [("geojson", "k.geojson"), ("rle-csv", "k.csv"), ("ome-zarr", "k.zarr"),
                                       ("tiff", "k.tif")])
def test_exports(small_disk, labels_paths, tmp_path, fmt, name):
    from napari_hubmap.postprocess.export import export_labels

    old_labels, new_labels = labels_paths
    out, reference = small_disk.path / name, tmp_path / "ref" / name
    reference.parent.mkdir()
    export = lambda labels, target: export_labels(labels, fmt, target, rle_id="kidney", full_shape=(600, 600))  # noqa: E731
    export(old_labels, out)  # the previous complete result
    export(new_labels, reference)
    assert files_under(out) != files_under(reference) if out.is_dir() else out.read_bytes() != reference.read_bytes()
    size = sum(f.stat().st_size for f in ([reference] if reference.is_file() else reference.rglob("*")) if f.is_file())
    write = lambda: export(new_labels, out)  # noqa: E731
    fail_on_full_disk(small_disk, write, out, leave=max(0, size // 2 - 4096))
    fail_on_io_error(small_disk.path, write, out, budget=size // 2)
    write()
    assert files_under(out) == files_under(reference) if out.is_dir() else out.read_bytes() == reference.read_bytes()


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """(slide, model, config, the map a run that never failed makes)."""
    from napari_hubmap.inference import InferenceConfig, predict_slide

    tmp_path = tmp_path_factory.mktemp("predicted")
    slide = tmp_path / "slide.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(slide, rng.integers(0, 256, (1300, 700, 3), dtype=np.uint8), tile=(256, 256), photometric="rgb")
    model, config = conv_model(0, tile=256, overlap=64), InferenceConfig(batch=4, skip_background=False)
    reference = tmp_path / "ref.prob.zarr"
    predict_slide(slide, reference, config, models=[model])
    return slide, model, config, reference


def test_probability_store_resumes_to_the_map_of_a_run_that_never_failed(small_disk, predicted):
    from napari_hubmap.inference import predict_slide
    from napari_hubmap.stores.probability import read_progress

    slide, model, config, reference = predicted
    out = small_disk.path / "slide.prob.zarr"
    run = lambda: predict_slide(slide, out, config, models=[model])  # noqa: E731
    small_disk.fill(leave=700 << 10)  # room for the store's first row band, not the whole map
    with pytest.raises(HubmapInputError) as caught:
        run()
    assert_one_clear_error(caught.value, out, NO_SPACE, or_inside=True)  # a chunk, or progress.json
    done = read_progress(out)["rows_done"]
    assert 0 < done < 1300 and not read_progress(out)["complete"]
    small_disk.unfill()
    with FailingWrites(small_disk.path, budget=200_000), pytest.raises(HubmapInputError) as caught:
        run()
    assert_one_clear_error(caught.value, out, IO_ERROR, or_inside=True)
    assert read_progress(out)["rows_done"] >= done  # the rows recorded as final stay final
    result = run()
    assert result.complete and result.resumed_rows > 0
    assert levels_of(out) == levels_of(reference)
    assert not [p for p in small_disk.path.rglob("*.partial")]


def test_probability_store_in_bands(small_disk, predicted):
    """A band that meets a full disk is not marked done (it is redone whole); the finished bands stay done;
    the lower levels made once space is back equal those of one whole run."""
    from napari_hubmap.inference import predict_slide
    from napari_hubmap.inference.engine import finish_bands, prepare_bands
    from napari_hubmap.stores.probability import ProbabilityStore

    slide, model, config, reference = predicted
    out = small_disk.path / "slide.prob.zarr"
    bands = prepare_bands(slide, out, config, band_rows=512, models=[model])
    assert len(bands) == 3
    predict_slide(slide, out, config, models=[model], band=bands[0])
    band = lambda: predict_slide(slide, out, config, models=[model], band=bands[1])  # noqa: E731
    small_disk.fill(leave=100 << 10)
    with pytest.raises(HubmapInputError) as caught:
        band()
    assert_one_clear_error(caught.value, out, NO_SPACE, or_inside=True)
    store = ProbabilityStore.reopen(out)
    assert store.band_done(*bands[0]) and not store.band_done(*bands[1])
    small_disk.unfill()
    band()
    predict_slide(slide, out, config, models=[model], band=bands[2])
    small_disk.fill(leave=16 << 10)
    with pytest.raises(HubmapInputError) as caught:
        finish_bands(out, bands)
    assert_one_clear_error(caught.value, out, NO_SPACE, or_inside=True)
    assert not ProbabilityStore.reopen(out).complete
    small_disk.unfill()
    finish_bands(out, bands)
    assert ProbabilityStore.reopen(out).complete and levels_of(out) == levels_of(reference)


def test_pyramid_cache(small_disk, monkeypatch, tmp_path):
    from napari_hubmap.slide import open_slide

    rng = np.random.default_rng(0)
    slides = []
    for name in ("a.tif", "b.tif"):
        slides.append(tmp_path / name)
        tifffile.imwrite(slides[-1], rng.integers(0, 256, (1800, 1500, 3), dtype=np.uint8), photometric="rgb")
    monkeypatch.setenv("NAPARI_HUBMAP_CACHE", str(tmp_path / "ref-cache"))
    with open_slide(slides[1]) as slide:
        slide.build_cache()
        reference = files_under(slide.cache.final)
    monkeypatch.setenv("NAPARI_HUBMAP_CACHE", str(small_disk.path))
    with open_slide(slides[0]) as slide:
        slide.build_cache()  # another slide's complete cache: it must stay as it is
    with open_slide(slides[1]) as slide:
        target = slide.cache.final
        fail_on_full_disk(small_disk, slide.build_cache, target, leave=300 << 10)
        fail_on_io_error(small_disk.path, slide.build_cache, target, budget=300_000)
        slide.build_cache()
        assert slide.cache.complete and files_under(target) == reference


def _project(folder: Path):
    from napari_hubmap.project import add_slide, init_project

    folder.mkdir(parents=True, exist_ok=True)
    project = init_project(folder / "project", tile=128, downscale=1)
    add_slide(project, _slide_png(folder.parent / "kidney.png", seed=0), slide_id="kidney")
    return project


def _slide_png(path: Path, seed: int) -> Path:
    from PIL import Image

    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (300, 420, 3), dtype=np.uint8)).save(path)
    return path


def test_adding_a_slide_on_a_full_disk_leaves_the_project_as_it_was(small_disk, tmp_path):
    """add_slide writes the ground truth copy, its labels, the pseudo-labels, then the manifest: any of them
    failing undoes the others."""
    from napari_hubmap.project import add_slide, open_project

    project = _project(small_disk.path)
    slide = _slide_png(tmp_path / "second.png", seed=1)
    ground_truth = _square_geojson(tmp_path / "second.geojson", 50)
    prob = write_prob_store(tmp_path / "second.prob.zarr", blob_map((300, 420), seed=2), downscale=1.0)
    add = lambda: add_slide(open_project(project.root), slide, slide_id="second", ground_truth=ground_truth,  # noqa: E731
                            predictions=[prob])
    for leave in (0, 8 << 10, 24 << 10):  # fails at the first file, or part way
        fail_on_full_disk(small_disk, add, Path(project.root), leave=leave, or_inside=True)
    add()
    second = open_project(project.root).slide("second")
    assert second.ground_truth is not None and second.predictions[0].pseudo_labels


def test_replacing_ground_truth_on_a_full_disk_keeps_the_old_file_and_labels_together(small_disk, tmp_path):
    """The copy of the new annotation used to replace the old one before its labels were written: a full disk
    then left the new file beside the old labels."""
    from napari_hubmap.project import add_slide, import_ground_truth, open_project

    project = _project(small_disk.path)
    slide = _slide_png(tmp_path / "second.png", seed=1)
    add_slide(project, slide, slide_id="second", ground_truth=_square_geojson(tmp_path / "old.geojson", 50))
    new = _square_geojson(tmp_path / "new.geojson", 100)
    replace = lambda: import_ground_truth(open_project(project.root), "second", new)  # noqa: E731
    for leave in (0, 4 << 10, 12 << 10):
        fail_on_full_disk(small_disk, replace, Path(project.root), leave=leave, or_inside=True)
    # the manifest's write fails last, after the new files are written: they used to have replaced the old
    # ones already, and the project no longer opened ("ground truth changed since it was imported")
    fail_on_io_error(small_disk.path, replace, Path(project.root) / "project.json", names=("project.json",))
    open_project(project.root, verify=True)
    replace()
    entry = open_project(project.root).slide("second").ground_truth
    assert (Path(project.root) / entry.file).read_bytes() == new.read_bytes()


def _square_geojson(path: Path, side: float) -> Path:
    ring = [[50.0, 50.0], [50.0 + side, 50.0], [50.0 + side, 50.0 + side], [50.0, 50.0 + side], [50.0, 50.0]]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
         "properties": {"classification": {"name": "Glomerulus"}}}]}))
    return path


def test_project_manifest(small_disk, monkeypatch, tmp_path):
    import napari_hubmap.project.manifest as manifest
    from napari_hubmap.project import open_project

    project = _project(small_disk.path)
    monkeypatch.setattr(manifest, "now_iso", lambda: "2026-01-01T00:00:00Z")
    project.models = [*project.models, "toy"]
    target = project.manifest_path
    fail_on_full_disk(small_disk, project.save, target)
    fail_on_io_error(small_disk.path, project.save, target, budget=100)
    assert "toy" not in open_project(project.root).models
    project.save()
    assert open_project(project.root).as_dict() == project.as_dict()


def test_review_state(small_disk):
    import napari_hubmap.project.review as review
    from napari_hubmap.project import open_project, set_state

    project = _project(small_disk.path)
    set_state(project, "kidney", "0,0", "dropped", note="old")
    target = Path(project.root) / review.REVIEW
    write = lambda: set_state(project, "kidney", "0,0", "unreviewed", note="new")  # noqa: E731
    fail_on_full_disk(small_disk, write, target)
    fail_on_io_error(small_disk.path, write, target, budget=10)
    assert open_project(project.root).review.state("kidney", "0,0") == "dropped"
    write()
    assert open_project(project.root).review.state("kidney", "0,0") == "unreviewed"


def _edits(path: Path):
    from napari_hubmap.project.edits import EditStore

    initial = np.zeros((700, 700), np.uint32)
    initial[:300, :300] = 5
    return EditStore.open(path, (700, 700), chunk=128, initial=initial)


def _noise(rng, shape):
    return rng.integers(1, 1000, shape).astype(np.uint32)  # incompressible: chunks that need real space


def test_edits_flush_keeps_the_edits_until_a_flush_succeeds(small_disk):
    from napari_hubmap.project.edits import EditStore

    path = small_disk.path / "edits" / "kidney.zarr"
    rng = np.random.default_rng(0)
    store = _edits(path)
    store.apply(0, 0, _noise(rng, (200, 200)))
    store.flush()  # the previous complete result
    durable = np.asarray(store).copy()
    store.apply(100, 100, _noise(rng, (600, 600)))
    wanted = np.asarray(store).copy()
    fail_on_full_disk(small_disk, store.flush, path, leave=300 << 10)
    fail_on_io_error(small_disk.path, store.flush, path, budget=100_000)
    assert store.unsaved and np.array_equal(np.asarray(store), wanted)  # in memory still
    with EditStore.open(path, read_only=True) as on_disk:
        assert np.array_equal(np.asarray(on_disk), durable)
    store.flush()
    store.close()
    with EditStore.open(path, read_only=True) as on_disk:
        assert np.array_equal(np.asarray(on_disk), wanted)


def test_a_flush_that_fails_after_its_commit_point_never_undoes_a_later_one(tmp_path):
    """The journal write fails after the chunks moved: the committed folder stays; the next flush must apply
    it first, or reopening would replay it (deleting a chunk it emptied) over the newer flush."""
    from napari_hubmap.project.edits import EditStore

    path = tmp_path / "kidney.zarr"
    store = _edits(path)
    store.apply(0, 0, np.zeros((128, 128), np.uint32))  # chunk (0, 0) becomes empty: its file is deleted
    with FailingWrites(tmp_path, names=("journal.json",)), pytest.raises(HubmapInputError) as caught:
        store.flush()
    assert_one_clear_error(caught.value, path, IO_ERROR)
    store.apply(0, 0, np.full((128, 128), 9, np.uint32))
    store.close()
    with EditStore.open(path) as reopened:  # opening for writing replays what is left
        assert (np.asarray(reopened)[:128, :128] == 9).all()
        assert (np.asarray(reopened)[128:300, 128:300] == 5).all()


def test_closing_on_a_full_disk_keeps_the_edits_for_the_next_close(small_disk):
    """close() used to mark the store closed even when its last flush failed: a second close, after freeing
    space, then returned at once and the edits were gone."""
    from napari_hubmap.project.edits import EditStore

    path = small_disk.path / "kidney.zarr"
    store = _edits(path)
    store.apply(0, 0, _noise(np.random.default_rng(3), (700, 700)))
    wanted = np.asarray(store).copy()
    fail_on_full_disk(small_disk, store.close, path, leave=64 << 10)
    assert not store.closed and store.unsaved
    store.close()
    assert store.closed
    with EditStore.open(path) as reopened:  # the lock was released
        assert np.array_equal(np.asarray(reopened), wanted)


def test_autosaver_reports_a_full_disk_and_saves_when_space_returns(small_disk, caplog):
    from napari_hubmap.project.edits import Autosaver, EditStore

    path = small_disk.path / "kidney.zarr"
    store = _edits(path)
    errors, saved = [], threading.Event()
    saver = Autosaver(store, 0.2, on_error=errors.append, on_saved=lambda sequence: saved.set())
    small_disk.fill(leave=64 << 10)
    store.apply(0, 0, _noise(np.random.default_rng(1), (700, 700)))
    wanted = np.asarray(store).copy()
    _wait_for(lambda: len(errors) >= 2)  # reported, and retried
    assert_one_clear_error(errors[0], path, NO_SPACE)
    assert store.unsaved and not saved.is_set() and np.array_equal(np.asarray(store), wanted)
    small_disk.unfill()
    _wait_for(saved.is_set)
    assert not store.unsaved and saver.last_error is None
    saver.close()
    store.close()
    with EditStore.open(path, read_only=True) as on_disk:
        assert np.array_equal(np.asarray(on_disk), wanted)
    quiet = _edits(small_disk.path / "other.zarr")
    quiet_saver = Autosaver(quiet, 0.2)
    small_disk.fill()
    quiet.apply(0, 0, _noise(np.random.default_rng(2), (700, 700)))
    with caplog.at_level("WARNING", logger="napari_hubmap.project.edits"):
        _wait_for(lambda: quiet_saver.last_error is not None)
        _wait_for(lambda: any("autosave" in r.getMessage() for r in caplog.records))
    small_disk.unfill()
    quiet_saver.close()
    quiet.close()
    assert not quiet.unsaved


def _wait_for(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


TINY_UNET = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}


def test_model_registry_save(small_disk, tmp_path):
    from napari_hubmap.registry import ModelCard, build_module, load_model, save_model

    card = ModelCard(name="tiny", architecture="Unet", encoder="tu-test_resnet", architecture_kwargs=dict(TINY_UNET),
                     created="2026-01-01T00:00:00Z")
    torch.manual_seed(0)
    old, new = build_module(card).eval(), build_module(card).eval()
    folder = small_disk.path / "models" / "tiny"
    save_model(old, card, folder)
    reference = save_model(new, card, tmp_path / "ref" / "tiny")
    write = lambda: save_model(new, card, folder)  # noqa: E731
    fail_on_full_disk(small_disk, write, folder, leave=100 << 10)  # safetensors' own error, os error 28
    fail_on_io_error(small_disk.path, write, folder, names=("card.json",))  # Python's own write
    assert load_model(folder).card.weights_sha256 != load_model(reference).card.weights_sha256
    write()
    assert files_under(folder) == files_under(reference)


def test_training_checkpoint(small_disk, tmp_path):
    from napari_hubmap.training.checkpoint import load_checkpoint, save_checkpoint

    net = torch.nn.Linear(200, 200)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(1, 200)).sum().backward()
    optimizer.step()

    def save(folder, epoch):
        torch.manual_seed(epoch)  # the RNG state is saved too
        save_checkpoint(folder, model=net.state_dict(), ema={k: v.clone() for k, v in net.state_dict().items()}, optimizer=optimizer.state_dict(),
                        state={"epoch": epoch})

    folder = small_disk.path / "tiny.checkpoint"
    save(folder, 1)
    save(tmp_path / "ref.checkpoint", 2)
    fail_on_full_disk(small_disk, lambda: save(folder, 2), folder, leave=200 << 10)
    fail_on_io_error(small_disk.path, lambda: save(folder, 2), folder, names=("state.json",))
    assert load_checkpoint(folder)[3]["epoch"] == 1
    save(folder, 2)
    assert files_under(folder) == files_under(tmp_path / "ref.checkpoint")


def test_cli_postprocess_to_a_full_disk_is_one_line_and_exit_2(small_disk, prob_path):
    out = small_disk.path / "kidney.labels.zarr"
    small_disk.fill()
    command = [sys.executable, "-m", "napari_hubmap.cli", "postprocess", str(prob_path), "--out", str(out)]
    if not (ROOT / "napari_hubmap" / "cli" / "__main__.py").exists():
        command[1:3] = ["-c", "import sys; from napari_hubmap.cli import main; sys.exit(main())"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()  # progress lines, then the one error line
    assert [line for line in lines if line.startswith("napari-hubmap:")] == lines[-1:]
    assert lines[-1] == f"napari-hubmap: error: {out}: cannot write: {NO_SPACE}"
    assert small_disk.files() == {}
    small_disk.unfill()
    assert subprocess.run(command, capture_output=True, text=True, env=env, timeout=120).returncode == 0
    assert levels_of(out)

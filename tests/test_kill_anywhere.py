"""SIGKILL anywhere (issue 16), the CI subset: predict, postprocess, export, train, the pyramid cache build
and project edits, each killed at seeded moments after it showed it was working; every store afterwards
is the previous result or, after the same command again, identical to an uninterrupted run's, and a model
folder always loads (the oracle: ``kill_helpers``). ``benchmarks/kill_campaign.py`` runs many more kills.
Plus the regressions the campaign found, reproduced in-process at the exact moment."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kill_helpers import EditsOp, ExportOp, PostprocessOp, PredictOp, PyramidOp, TrainOp, kill_once, reference, table

KILLS = 2
SEED = 16
SPREAD = 0.8  # kill moments over the first 80 % of the reference's working time: most land mid-work
RETRIES = 3  # a kill after the command's exit (a run faster than its reference, measured beside others) is tried again sooner


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """References of every operation, then KILLS seeded kills of each, two at a time: records by operation."""
    root = tmp_path_factory.mktemp("kills")
    ops = {"predict": PredictOp(640, 512), "train": TrainOp(epochs=1), "pyramid": PyramidOp(3000, 2600)}
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = {name: pool.submit(reference, op, root) for name, op in ops.items()}
        refs = {"predict": pending["predict"].result()}
        ops["postprocess"] = PostprocessOp(refs["predict"].finished / "pred" / "slide.prob.zarr")
        refs["postprocess"] = reference(ops["postprocess"], root)
        ops["export"] = ExportOp(refs["postprocess"].template)
        refs["export"] = reference(ops["export"], root)
        refs.update({name: future.result() for name, future in pending.items()})
        edits = EditsOp()
        edits_template = edits.make_template(root)
        jobs = [(name, k) for k in range(KILLS) for name in ops]
        records = list(pool.map(lambda job: kill_once(ops[job[0]], refs[job[0]], root / f"{job[0]}-{job[1]}",
                                                      SEED * 100 + job[1], spread=SPREAD, rerun_previous=False,
                                                      retries=RETRIES), jobs))
        records += list(pool.map(lambda k: edits.kill_once(edits_template, root / f"edits-{k}", SEED * 100 + k),
                                 range(KILLS)))
    print("\n" + table(records, SEED))
    return {name: [r for r in records if r.op == name] for name in [*ops, edits.name]}


@pytest.mark.parametrize("name", ["predict", "postprocess", "export", "train", "pyramid", "project-edits"])
def test_a_killed_operation_leaves_the_previous_result_or_one_that_resumes_identically(campaign, name):
    records = campaign[name]
    assert len(records) == KILLS
    failed = [(r.seed, r.delay, r.detail) for r in records if r.outcome == "FAILED"]
    assert not failed, failed
    assert any(r.interrupted for r in records), f"no kill of {name} landed mid-work: {records}"


def test_most_kills_landed_mid_work(campaign):
    """Not vacuous: most kills stopped a process that was still working on an unfinished result."""
    records = [r for records in campaign.values() for r in records]
    assert sum(r.interrupted for r in records) > len(records) / 2, records


# ------------------------------------------------------------------------------------------ regressions


@pytest.fixture
def discs(tmp_path):
    from training_data import write_disc_folder

    return write_disc_folder(tmp_path / "discs")


def _tiny_config(epochs: int):
    from napari_hubmap.training import TrainConfig

    return TrainConfig(preset="effnet-unet", tile=64, infer_tile=64, epochs=epochs, samples_per_epoch=4, batch=4,
                       workers=0, lr=3e-3, warmup_epochs=0.5, val_groups=["pC"], thresholds=[0.3, 0.5, 0.7])


def _weights(folder):
    from napari_hubmap.registry import load_model

    return {k: v.clone() for k, v in load_model(folder).module.state_dict().items()}


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not an Exception, so no handler catches it)."""


def test_a_kill_between_the_first_registration_and_its_checkpoint_still_resumes(tmp_path, discs, monkeypatch):
    """Epoch 1's best was saved into the model folder, then the process died before the epoch's checkpoint:
    the old code left a model folder without a checkpoint, and the re-run refused it as 'already exists'."""
    from napari_hubmap.training import loop, train
    from napari_hubmap.training.checkpoint import checkpoint_folder

    real = loop._save_checkpoint

    def die_at_the_first_epoch_checkpoint(run):
        if run.epoch == 1:  # epoch 1 trained, validated and registered
            raise Killed
        return real(run)

    monkeypatch.setattr(loop, "_save_checkpoint", die_at_the_first_epoch_checkpoint)
    with pytest.raises(Killed):
        train(_tiny_config(1), [discs], tmp_path / "killed")
    monkeypatch.setattr(loop, "_save_checkpoint", real)
    _weights(tmp_path / "killed")  # the folder loads
    events = []
    train(_tiny_config(1), [discs], tmp_path / "killed", progress=lambda p: events.append(p.details))
    assert events[0]["event"] == "start" and events[0]["resumed_at"] == 0  # resumed (from the start), not refused
    assert not checkpoint_folder(tmp_path / "killed").exists()
    _weights(tmp_path / "killed")  # identical weights to a straight run: the kill campaign checks that


def test_a_kill_while_the_finished_run_removes_its_checkpoint_leaves_no_torn_checkpoint(tmp_path, discs, monkeypatch):
    """The last step removes ``<out>.checkpoint`` file by file: killed half-way, the old code left a folder
    without its tensors, which the re-run tried to resume from and failed on."""
    from napari_hubmap.training import loop, train
    from napari_hubmap.training.checkpoint import checkpoint_folder

    out = tmp_path / "m"
    real_rmtree = shutil.rmtree

    def killed_half_way(folder, *args, **kwargs):
        sorted(Path(folder).iterdir())[0].unlink()  # one file gone, then the kill
        raise Killed

    monkeypatch.setattr(loop.shutil, "rmtree", killed_half_way)
    with pytest.raises(Killed):
        train(_tiny_config(1), [discs], out)
    monkeypatch.setattr(loop.shutil, "rmtree", real_rmtree)
    finished = _weights(out)
    ckpt = checkpoint_folder(out)
    assert not ckpt.exists() or {p.name for p in ckpt.iterdir()} == {"tensors.safetensors", "state.json"}
    if ckpt.exists():  # a whole checkpoint of the finished run: the re-run ends at once with the same weights
        train(_tiny_config(1), [discs], out)
    b = _weights(out)
    assert all((finished[k] == b[k]).all() for k in finished)


def test_a_cache_build_removes_the_partial_caches_of_killed_builds_only(tmp_path, monkeypatch):
    """A killed build leaves ``<cache>.partial-<pid>-<thread>``; the old code never removed it (a third of
    the slide's size each time, forever). The next build removes those whose process is gone."""
    import subprocess
    import sys

    import numpy as np
    import tifffile

    from napari_hubmap.slide import open_slide
    from napari_hubmap.slide.pyramid_cache import cache_dir_for

    monkeypatch.setenv("NAPARI_HUBMAP_CACHE", str(tmp_path / "cache"))
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((1200, 1000, 3), np.uint8), photometric="rgb")
    final = cache_dir_for(tmp_path / "flat.tif")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = final.with_name(f"{final.name}.partial-{int(gone.stdout)}-1")
    alive = final.with_name(f"{final.name}.partial-{os.getppid()}-1")  # a build of a live process: kept
    for folder in (dead, alive):
        (folder / "1").mkdir(parents=True)
    with open_slide(tmp_path / "flat.tif") as slide:
        slide.build_cache()
    assert final.is_dir() and not dead.exists() and alive.exists()


"""Two writers: a project, store or model folder written by one process refuses a second, naming the first.

A holder is a real second process (``holder.py``, below) that takes a lock the way the writers do and waits to
be killed; the second writer is the real entry point (the CLI in-process, or the library function). Killing the
holder with SIGKILL leaves its lock file behind, whose ``flock`` the kernel has dropped: the next writer takes
it over and names itself. Readers take no lock.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from napari_hubmap import locks
from napari_hubmap.errors import HubmapInputError
from napari_hubmap.locks import FolderLock, lock_file_of, read_holder

ROOT = Path(__file__).resolve().parents[1]
HOLDER = textwrap.dedent('''
    """Takes a lock as a writer does (KIND TARGET), says so in TARGET's marker file, waits to be killed."""
    import sys, time
    from pathlib import Path

    kind, target, marker = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if kind == "edits":
        from napari_hubmap.project.edits import EditStore

        held = EditStore.open(target)
    elif kind == "project":
        from napari_hubmap.project.locking import project_lock

        held = project_lock(target, "adding slide s9").acquire()
    else:
        from napari_hubmap.locks import FolderLock

        purposes = {"folder": "a batch of 3 slides", "beside": "predicting s1.tif", "band": "predicting rows 0-8 of s1.tif"}
        held = FolderLock(target, purposes[kind], beside=kind != "folder", shared=kind == "band").acquire()
    marker.write_text("held")
    time.sleep(300)
''')


@pytest.fixture
def holder(tmp_path):
    """``holder(kind, target)``: a running process holding that lock (killed at the end)."""
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    started = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def start(kind: str, target: Path) -> subprocess.Popen:
        marker = tmp_path / f"held-{len(started)}"
        proc = subprocess.Popen([sys.executable, str(script), kind, str(target), str(marker)], env=env,
                                stderr=subprocess.PIPE, text=True)
        started.append(proc)
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the holder did not take its lock"
            time.sleep(0.05)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def names(message: str, proc: subprocess.Popen, purpose: str) -> bool:
    """The one-line refusal names the holder's program, pid, host and purpose."""
    return ("\n" not in message and f"in use by holder.py (pid {proc.pid} on {socket.gethostname()}) since " in message
            and message.endswith(f" for {purpose}; close it or wait"))


def cli(capsys, *args) -> tuple[int, str]:
    from napari_hubmap.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip()


# --------------------------------------------------------------------------------------- the lock itself


def test_a_second_writer_learns_who_holds_it_and_a_killed_holders_lock_is_taken_over(tmp_path, holder):
    folder = tmp_path / "out"
    folder.mkdir()
    proc = holder("folder", folder)
    with pytest.raises(HubmapInputError) as refused:
        FolderLock(folder, "mine").acquire()
    assert refused.value.path == str(folder) and names(refused.value.problem, proc, "a batch of 3 slides")
    kill(proc)
    assert read_holder(lock_file_of(folder))["pid"] == proc.pid  # the dead holder's file stays; its flock is gone
    with FolderLock(folder, "taking over") as lock:
        record = read_holder(lock.path)
        assert (record["pid"], record["purpose"], record["host"]) == (os.getpid(), "taking over", socket.gethostname())
    assert not lock_file_of(folder).exists()  # released: nothing left behind


def test_a_lock_file_replaced_between_open_and_flock_is_opened_again(tmp_path, monkeypatch):
    folder = tmp_path / "f"
    folder.mkdir()
    path = lock_file_of(folder)
    real, calls = locks.fcntl.flock, []

    def flock(fd, op):  # the previous holder releases (unlinks) and a new file appears, after our open
        calls.append(op)
        if len(calls) == 1:
            path.unlink()
            path.write_text("")
        return real(fd, op)

    path.write_text("")
    monkeypatch.setattr(locks.fcntl, "flock", flock)
    lock = FolderLock(folder, "x").acquire()
    monkeypatch.undo()
    assert len(calls) == 2
    assert os.fstat(lock.fd).st_ino == os.stat(path).st_ino  # the flock is on the file at the path
    lock.release()


def test_a_forked_child_does_not_keep_its_dead_parents_lock(tmp_path):
    folder, child_pid = tmp_path / "model", tmp_path / "child.pid"
    script = tmp_path / "forks.py"  # takes the lock, forks a child that lives on (a data-loader worker), is killed
    script.write_text(textwrap.dedent(f"""
        import os, signal, time
        from pathlib import Path
        from napari_hubmap.locks import FolderLock
        FolderLock({str(folder)!r}, "training", beside=True).acquire()
        if os.fork() == 0:
            Path({str(child_pid)!r}).write_text(str(os.getpid()))
            time.sleep(60)
            os._exit(0)
        while not Path({str(child_pid)!r}).exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)
    """))
    parent = subprocess.run([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    child = int(child_pid.read_text())
    try:
        assert parent.returncode == -signal.SIGKILL
        os.kill(child, 0)  # the child still runs
        with FolderLock(folder, "saving model", beside=True) as lock:  # ... and holds no lock
            assert read_holder(lock.path)["purpose"] == "saving model"
    finally:
        os.kill(child, signal.SIGKILL)


def test_folders_made_for_a_lock_file_go_again_unless_written_to(tmp_path):
    target = tmp_path / "a" / "b" / "model"
    with FolderLock(target, "training", beside=True):
        assert lock_file_of(target, beside=True).parent == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []  # a refused or failed run leaves nothing
    with FolderLock(target, "training", beside=True):
        target.mkdir()
    assert [p.name for p in target.parent.iterdir()] == ["model"]


def test_a_dead_holder_is_said_to_have_ended():
    from napari_hubmap.locks import describe_holder

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = {"pid": int(child.stdout), "host": socket.gethostname(), "program": "x", "since": "t", "purpose": "p"}
    assert describe_holder(dead).endswith("for p (that process has ended; one it started may still hold the lock)")
    assert describe_holder({**dead, "pid": os.getpid()}).endswith("for p")


def test_shared_holders_write_together_and_keep_out_a_lone_writer(tmp_path, holder):
    store = tmp_path / "s1.prob.zarr"
    proc = holder("band", store)
    mine = FolderLock(store, "predicting rows 8-16 of s1.tif", beside=True, shared=True).acquire()
    with pytest.raises(HubmapInputError, match="in use by .* for predicting rows"):
        FolderLock(store, "predicting s1.tif", beside=True).acquire()
    mine.release()
    assert lock_file_of(store, beside=True).exists()  # the other band writer still holds it
    with pytest.raises(HubmapInputError, match="in use by"):
        FolderLock(store, "predicting s1.tif", beside=True).acquire()
    kill(proc)
    FolderLock(store, "predicting s1.tif", beside=True).acquire().release()
    assert not lock_file_of(store, beside=True).exists()


def test_nested_steps_share_the_lock_and_other_takers_in_this_process_are_refused(tmp_path):
    from napari_hubmap.project.locking import project_lock

    outer = project_lock(tmp_path, "making the project").acquire()
    inner = project_lock(tmp_path, "adding slide a").acquire()
    inner.release()
    with pytest.raises(HubmapInputError, match=rf"pid {os.getpid()} .* for making the project"):
        FolderLock(tmp_path, "editing").acquire()
    outer.release()
    with FolderLock(tmp_path, "editing"):
        pass
    assert not lock_file_of(tmp_path).exists()


# -------------------------------------------------------------------------------------------- projects


@pytest.fixture
def project(tmp_path):
    from napari_hubmap.project import create_project
    from napari_hubmap.synth import SynthSpec, write_synthetic_tiff

    slide = tmp_path / "s1.tif"
    write_synthetic_tiff(slide, SynthSpec(width=700, height=500, seed=1))
    return create_project(tmp_path / "proj", [slide], tile=64, downscale=2)


def test_project_changes_are_refused_while_another_process_changes_it(project, holder, capsys, monkeypatch, tmp_path):
    from napari_hubmap.project import open_edits, open_project, review, set_state

    monkeypatch.setattr(review, "LOCK_WAIT_S", 0.2)
    root = project.root
    proc = holder("project", root)
    code, err = cli(capsys, "project", "add-slide", root, tmp_path / "s1.tif", "--id", "s2")
    assert code == 2 and err.startswith(f"napari-hubmap: error: {root}: ") and names(err, proc, "adding slide s9")
    code, err = cli(capsys, "project", "review", root, "--slide", "s1", "--tile", "0,0", "--state", "dropped")
    assert code == 2 and names(err, proc, "adding slide s9")
    with pytest.raises(HubmapInputError, match="in use by holder.py"):
        set_state(project, "s1", "0,0", "dropped")
    assert cli(capsys, "project", "info", root)[0] == 0  # readers are not blocked
    open_project(root).review.state("s1", "0,0")
    open_edits(project, "s1").close()  # a slide's edits have their own lock
    kill(proc)
    set_state(project, "s1", "0,0", "dropped")
    assert open_project(root).review.state("s1", "0,0") == "dropped"
    assert not lock_file_of(root).exists()


def test_a_project_saved_by_another_process_since_it_was_opened_is_not_overwritten(project, tmp_path):
    from napari_hubmap.project import add_slide, open_project

    mine = open_project(project.root)
    theirs = open_project(project.root)
    add_slide(theirs, tmp_path / "s1.tif", slide_id="s2")
    with pytest.raises(HubmapInputError, match="changed by another process"):
        add_slide(mine, tmp_path / "s1.tif", slide_id="s3")
    assert [s.id for s in open_project(project.root).slides] == ["s1", "s2"]  # s2 kept


def test_a_slide_edited_in_another_process_is_refused_there_and_taken_over_after_a_kill(project, holder):
    from napari_hubmap.project import EditStore, open_edits

    open_edits(project, "s1").close()
    path = project.resolve(project.slide("s1").edits)
    proc = holder("edits", path)
    with pytest.raises(HubmapInputError) as refused:
        open_edits(project, "s1")
    assert names(refused.value.problem, proc, f"editing {path.name}")
    reader = EditStore.open(path, read_only=True)  # a viewer showing it read-only
    assert reader.shape == project.working_shape("s1")
    kill(proc)
    store = open_edits(project, "s1")
    store.apply(0, 0, np.full((4, 4), 7))
    assert read_holder(lock_file_of(path))["pid"] == os.getpid()
    store.close()
    assert EditStore.open(path, read_only=True)[0, 0] == 7


# ------------------------------------------------------------------------------------ stores and models


def test_predict_postprocess_and_a_cohort_refuse_outputs_being_written(tmp_path, holder, capsys):
    from synthetic_maps import blob_map, write_prob_store
    from test_cli import synthetic_slides, tiny_model

    from napari_hubmap.batch import run_cohort
    from napari_hubmap.postprocess import postprocess_slide
    from napari_hubmap.stores.probability import open_probability

    slide, model = synthetic_slides(tmp_path, seeds=(1,))[0], tiny_model(tmp_path)
    out = tmp_path / "pred"
    proc = holder("beside", out / "s1.prob.zarr")
    code, err = cli(capsys, "predict", slide, "--model", model, "--out", out)
    assert code == 2 and names(err, proc, "predicting s1.tif")

    prob = tmp_path / "p.prob.zarr"
    write_prob_store(prob, blob_map())
    labels = tmp_path / "p.labels.zarr"
    proc = holder("beside", labels)
    code, err = cli(capsys, "postprocess", prob, "--out", labels)
    assert code == 2 and names(err, proc, "predicting s1.tif") and not labels.exists()
    open_probability(prob)  # reading the map is not blocked
    kill(proc)
    assert postprocess_slide(prob, labels).objects > 0
    assert not lock_file_of(labels, beside=True).exists()

    proc = holder("folder", out)
    with pytest.raises(HubmapInputError, match="in use by holder.py .* for a batch of 3 slides"):
        run_cohort([slide], out)


def test_training_and_saving_refuse_a_model_folder_being_written(tmp_path, holder, capsys):
    from test_cli import tiny_model
    from training_data import write_disc_folder

    from napari_hubmap.registry import load_model, save_model

    tiny = load_model(tiny_model(tmp_path))
    target = tmp_path / "models" / "new"
    proc = holder("beside", target)
    data = write_disc_folder(tmp_path / "data", count=4)
    code, err = cli(capsys, "train", "--data", data, "--out", target, "--epochs", "1")
    assert code == 2 and names(err, proc, "predicting s1.tif") and not target.exists()
    with pytest.raises(HubmapInputError, match="in use by holder.py"):
        save_model(tiny.module, tiny.card, target)
    kill(proc)
    save_model(tiny.module, tiny.card, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["new", "tiny"]  # no lock file left beside it


# ----------------------------------------------------------------------------------------------- viewer


@pytest.mark.gui
def test_the_review_panel_names_the_process_editing_a_slide_and_stays_usable(make_napari_viewer, qtbot, project, holder):
    from napari_hubmap._widgets.review_panel import ReviewPanel
    from napari_hubmap.project import open_edits

    open_edits(project, "s1").close()
    proc = holder("edits", project.resolve(project.slide("s1").edits))
    viewer = make_napari_viewer()
    panel = ReviewPanel(viewer)
    viewer.window.add_dock_widget(panel, name="Review")
    assert panel.open(project.root)  # the project opens; its slide's edits are another process's
    message = panel.status.text()
    assert message.startswith("Cannot edit slide s1: ") and names(message, proc, "editing s1.zarr")
    assert panel.store is None and not panel.layers and panel.tiles.count() == 0
    kill(proc)
    panel.show_slide("s1")  # taken over once that process is gone
    assert panel.store is not None and "edits" in panel.layers
    panel.close_project()

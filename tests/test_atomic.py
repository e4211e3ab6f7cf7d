"""Atomic writes: the target appears complete or not at all, with the usual permissions."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from napari_hubmap.atomic import atomic_path, write_text_atomic


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_written_files_get_umask_permissions_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
        with atomic_path(tmp_path / "d.zarr", is_dir=True) as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d.zarr").stat().st_mode) == 0o755
    assert (tmp_path / "d.zarr" / "x").read_text() == "1"


def test_folder_replaced_in_one_step_without_leftovers(tmp_path):
    from napari_hubmap.atomic import _exchange, atomic_path

    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("a")
    swapped = _exchange(a, b)  # Linux (renameat2): both names exist throughout, contents swapped
    assert swapped == sys.platform.startswith("linux")
    if swapped:
        assert (b / "x").read_text() == "a" and not any(a.iterdir())
    else:  # elsewhere nothing moved
        assert (a / "x").read_text() == "a" and not any(b.iterdir())


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    """A writer killed mid-write leaves its temporary; the next write of that target removes it, but
    never a live writer's (this process's) nor another target's."""
    import subprocess

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    target = tmp_path / "slide.labels.zarr"
    left_by_kill = tmp_path / f".slide.labels.zarr.{dead_pid}-abc123.partial.labels.zarr"
    (left_by_kill / "0").mkdir(parents=True)
    (left_by_kill / "0" / "chunk").write_bytes(b"x" * 1000)
    live = tmp_path / f".slide.labels.zarr.{os.getpid()}-def456.partial.labels.zarr"
    live.mkdir()
    other_target = tmp_path / f".slide.labels.zarr.old.{dead_pid}-ghi789.partial.zarr"
    other_target.mkdir()
    with atomic_path(target, is_dir=True) as tmp:
        assert f".slide.labels.zarr.{os.getpid()}-" in tmp.name  # its own temporaries carry its pid
        (tmp / "new").write_text("new")
    assert not left_by_kill.exists() and live.is_dir() and other_target.is_dir()
    assert (target / "new").read_text() == "new"

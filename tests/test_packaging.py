"""Packaging: the core stays free of Qt/napari, the npe2 manifest validates and ships in the wheel, and the wheel
carries what the README promises: every package, the default model and the sample tile.

The slowest test builds the wheel from the tracked files, installs it (not editable) into a fresh virtual
environment and runs the installed command there, away from the source tree: ``models`` must list
``hubmap-default`` from inside the installed package and ``predict`` must run it on the packaged sample tile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def core_modules() -> list[str]:
    package = ROOT / "napari_hubmap"
    names = []
    for path in package.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if "_widgets" in parts:
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


def test_core_imports_neither_qt_nor_napari():
    modules = core_modules()
    assert "napari_hubmap.slide.open" in modules and "napari_hubmap.cli" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'napari' or m.startswith(('napari.', 'qtpy', 'PyQt', 'PySide', 'vispy', 'magicgui')))\n"
        "print(' '.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"core pulled in: {result.stdout}"


def test_manifest_validates():
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run([str(npe2), "validate", "napari-hubmap"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_manifest_is_found_through_the_entry_point():
    from npe2 import PluginManager

    manager = PluginManager.instance()
    manager.discover()
    manifest = manager.get_manifest("napari-hubmap")
    commands = {c.id for c in manifest.contributions.commands}
    assert {"napari-hubmap.get_reader", "napari-hubmap.slide_panel", "napari-hubmap.sample_pas"} <= commands
    for command in manifest.contributions.commands:  # every python_name resolves
        module, _, attr = command.python_name.partition(":")
        assert hasattr(__import__(module, fromlist=[attr]), attr), command.python_name


@pytest.mark.slow
def test_wheel_ships_the_manifest(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    wheel = next(tmp_path.glob("napari_hubmap-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        manifest = archive.read("napari_hubmap/napari.yaml").decode()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert manifest == (ROOT / "napari.yaml").read_text()
    assert "napari_hubmap:napari.yaml" in entry_points
    assert {"napari_hubmap/samples/hubmap-pas-337.jpg", "napari_hubmap/samples/hubmap-pas-337.json"} <= set(names)
    assert {"napari_hubmap/bundled_models/hubmap-default/card.json",
            "napari_hubmap/bundled_models/hubmap-default/model.safetensors"} <= set(names)


def test_the_package_list_names_every_package_of_the_source_tree():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set(find_packages(str(ROOT), include=["napari_hubmap*"]))
    assert found <= declared, f"packages missing from pyproject.toml: {sorted(found - declared)}"
    assert declared - found == {"napari_hubmap.bundled_models"}


def test_a_source_checkout_finds_the_models_folder_beside_the_package(monkeypatch):
    from napari_hubmap.registry.store import BUNDLED_ENV, bundled_models_folder, packaged_models_folder

    monkeypatch.delenv(BUNDLED_ENV, raising=False)
    assert packaged_models_folder() is None
    assert bundled_models_folder() == ROOT / "models"


def _fresh_venv(folder: Path) -> Path:
    """A new virtual environment whose site-packages sees this one's dependencies (a .pth line; .pth files
    there, such as the editable install's finder, are not run) but not napari_hubmap itself."""
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_venv_lists_and_runs_the_default_model(tmp_path):
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode:
        pytest.skip("not a git checkout: the wheel is built from the tracked files")
    source = tmp_path / "source"
    for name in filter(None, tracked.stdout.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((ROOT / name).read_bytes())
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, cwd=tmp_path)
    python = _fresh_venv(tmp_path / "venv")
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    wheel = next(wheels.glob("napari_hubmap-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(wheel)], check=True)
    home = tmp_path / "home"
    env = {key: value for key, value in os.environ.items() if not key.startswith("NAPARI_HUBMAP_")}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CACHE_HOME=str(home / "cache"))

    def installed(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), "-m", "napari_hubmap.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)

    where = subprocess.run([str(python), "-c", "import napari_hubmap; print(napari_hubmap.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site), where  # the installed copy, not the checkout
    listed = installed("models")
    assert listed.returncode == 0, listed.stderr
    models = {entry["name"]: entry for entry in map(json.loads, listed.stdout.splitlines())}
    assert "hubmap-default" in models
    assert Path(models["hubmap-default"]["path"]).is_relative_to(site / "napari_hubmap" / "bundled_models")
    sample = site / "napari_hubmap" / "samples" / "hubmap-pas-337.jpg"
    out = tmp_path / "sample.prob.zarr"
    predicted = installed("predict", str(sample), "--model", "hubmap-default", "--mpp", "1", "--backend", "torch",
                          "--out", str(out))
    assert predicted.returncode == 0, predicted.stderr
    line = json.loads(predicted.stdout.splitlines()[-1])
    assert line["computed_tiles"] > 0 and out.is_dir()

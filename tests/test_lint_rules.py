"""The rules checked before the code runs: ruff and import-linter pass on the tree (scripts/test.sh also runs
them, before pytest), the core's import contract names every module of the core and the panels' contract every
panel."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import napari_hubmap

ROOT = Path(__file__).resolve().parents[1]
CORE_CONTRACT = "The core never imports Qt, napari, magicgui or the widgets"
PANEL_CONTRACT = "The panels are siblings: none imports another, directly or through a helper"


def tool(name: str) -> str:
    """The tool beside this Python (the .venv's), else on PATH; a skip when neither has it."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (scripts/setup.sh installs it with the package's test extra)")
    return found


def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing():
    result = run([tool("ruff"), "check", "--output-format", "concise", "."])
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts_are_kept():
    result = run([tool("lint-imports"), "--no-cache"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_contract_names_every_module_but_the_widgets():
    """A module added to the package is in the core contract, or the contract would not check it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    (core,) = [c for c in config["contracts"] if c["name"] == CORE_CONTRACT]
    modules = {f"napari_hubmap.{m.name}" for m in pkgutil.iter_modules(napari_hubmap.__path__)}
    assert set(core["source_modules"]) == modules - {"napari_hubmap._widgets"}


def test_panel_contract_names_every_panel():
    """A panel added to _widgets is in the panels' independence contract, or it could import its siblings."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    (panels,) = [c for c in config["contracts"] if c["name"] == PANEL_CONTRACT]
    folder = ROOT / "napari_hubmap" / "_widgets"
    assert set(panels["modules"]) == {f"napari_hubmap._widgets.{p.stem}" for p in folder.glob("*_panel.py")}

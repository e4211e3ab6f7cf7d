"""The cached ONNX graphs' shared rules: their input and output names, the JSON record beside each graph
(what made it, and its own SHA-256) that decides whether a cached graph is trusted or made again, and when a
graph is made in a child process (off the main thread, where tracing or calibrating would freeze a viewer)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from ..errors import HubmapInputError
from ..jsonio import load_json
from ..registry.weights import sha256_file

INPUT, OUTPUT = "input", "output"


def record_path(graph: Path) -> Path:
    return graph.with_suffix(".json")


def record_matches(graph: Path, **expected: str) -> bool:
    """``graph``'s record beside it holds ``expected`` and the graph's own SHA-256, and the graph's bytes match it."""
    try:
        saved = load_json(record_path(graph), "ONNX cache record")
        return all(saved.get(key) == value for key, value in expected.items()) and \
            saved.get("onnx_sha256") == sha256_file(graph)
    except (OSError, ValueError, AttributeError):
        return False


def recorded_sha256(graph: Path) -> str:
    """The SHA-256 ``graph``'s record holds (for a graph :func:`record_matches` has just checked)."""
    return load_json(record_path(graph), "ONNX cache record")["onnx_sha256"]


def made_in_child(model) -> bool:
    """Whether a graph of ``model`` is made in a child process: off the main thread (a viewer's worker) for a
    saved registry model, which a child can load; a network built in memory is always handled here."""
    from ..registry.store import is_model_folder

    off_main_thread = threading.current_thread() is not threading.main_thread()
    return off_main_thread and bool(model.card.weights_sha256) and is_model_folder(Path(model.path))


def run_in_child(module: str, args: list, folder: Path, failure: str) -> None:
    """``python -m module args`` (one torch thread); a non-zero exit is one error about ``folder``:
    ``failure: <the child's last stderr line>``."""
    command = [sys.executable, "-m", module, *(str(a) for a in args)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise HubmapInputError(folder, f"{failure}: {last}")

"""The cached ONNX graphs' shared rules: their input and output names, and the JSON record beside each graph
(what made it, and its own SHA-256) that decides whether a cached graph is trusted or made again."""

from __future__ import annotations

from pathlib import Path

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

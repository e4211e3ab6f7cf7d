"""State-dict helpers: checksums, a safetensors-ready copy, and a readable summary of mismatches."""

from __future__ import annotations

import hashlib
import os
from typing import Mapping

import torch

SHOWN_KEYS = 3
"""How many keys a mismatch summary names for each kind of problem."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tensors_only(state: Mapping) -> dict[str, torch.Tensor]:
    """The tensor entries of a state dict (checkpoints sometimes carry other values)."""
    return {key: value for key, value in state.items() if isinstance(key, str) and isinstance(value, torch.Tensor)}


def state_dict_for_saving(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of the module's tensors, none sharing memory with another.

    safetensors refuses tensors that share storage (tied weights, views); such tensors are cloned, so the
    file holds every key of the state dict and loads back with ``strict=True``.
    """
    result: dict[str, torch.Tensor] = {}
    seen_storages: set[tuple[str, int]] = set()
    for key, tensor in module.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        storage = (str(tensor.device), tensor.untyped_storage().data_ptr())
        if storage in seen_storages or tensor.untyped_storage().nbytes() != tensor.nbytes:
            tensor = tensor.clone()
        seen_storages.add((str(tensor.device), tensor.untyped_storage().data_ptr()))
        result[key] = tensor
    return result


def mismatch_summary(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str:
    """``""`` when keys and shapes agree, else e.g. ``"2 missing keys (a, b), 1 shape mismatch (...)"``."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    shapes = [
        f"{key}: file {list(found[key].shape)} vs model {list(expected[key].shape)}"
        for key in expected
        if key in found and tuple(found[key].shape) != tuple(expected[key].shape)
    ]
    parts = [
        _count_and_show(len(missing), "missing key", missing),
        _count_and_show(len(unexpected), "unexpected key", unexpected),
        _count_and_show(len(shapes), "shape mismatch", shapes, plural="es"),
    ]
    return ", ".join(part for part in parts if part)


def _count_and_show(count: int, noun: str, items: list[str], plural: str = "s") -> str:
    if not count:
        return ""
    shown = ", ".join(items[:SHOWN_KEYS]) + (", ..." if count > SHOWN_KEYS else "")
    return f"{count} {noun}{plural if count != 1 else ''} ({shown})"

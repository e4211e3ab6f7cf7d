"""State-dict helpers: checksums, a safetensors-ready copy, a readable summary of mismatches, and a check
of a safetensors header (its length, JSON, dtypes, shapes and offsets) before anything loads the file."""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Mapping

import torch

from ..errors import HubmapInputError

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


MAX_HEADER_BYTES = 100 << 20
"""safetensors' own ceiling on the JSON header; a length field above it is a corrupt (or foreign) file."""
SAFETENSORS_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                        "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def check_safetensors_header(path: str | os.PathLike) -> None:
    """Read and check a safetensors header before anything loads the file: its length field against the
    file's size (never allocating what it claims), its JSON, and each tensor's dtype, shape and offsets
    against the data. Raises :class:`HubmapInputError` naming the file and the first problem."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise HubmapInputError(path, f"not a readable safetensors file: {size} bytes, shorter than its 8-byte header length")
        length = int.from_bytes(prefix, "little")
        if length > min(size - 8, MAX_HEADER_BYTES):
            raise HubmapInputError(path, f"not a readable safetensors file (truncated?): its header claims {length} bytes, "
                                         f"the file has {size - 8} after the length field")
        raw = fh.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:  # RecursionError: '[[[[...' nested deep
        raise HubmapInputError(path, f"not a readable safetensors file: corrupt header: not JSON ({type(error).__name__}: {error})") from None
    if not isinstance(header, dict):
        raise HubmapInputError(path, f"not a readable safetensors file: corrupt header: a JSON {type(header).__name__}, not an object")
    data_bytes = size - 8 - length
    for name, entry in header.items():
        if name != "__metadata__":
            _check_tensor_entry(path, name, entry, data_bytes)


def _check_tensor_entry(path, name: str, entry, data_bytes: int) -> None:
    problem = _tensor_entry_problem(entry, data_bytes)
    if problem:
        raise HubmapInputError(path, f"not a readable safetensors file: corrupt header: tensor {name!r}: {problem}")


def _tensor_entry_problem(entry, data_bytes: int) -> str:
    if not isinstance(entry, dict):
        return "not an object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in SAFETENSORS_ITEMSIZE:
        return f"unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        return f"shape {shape!r} is not a list of sizes"
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)):
        return f"data_offsets {offsets!r} is not [begin, end]"
    begin, end = offsets
    if not 0 <= begin <= end <= data_bytes:
        return f"data_offsets [{begin}, {end}] outside the file's {data_bytes} data bytes"
    if math.prod(shape) * SAFETENSORS_ITEMSIZE[dtype] != end - begin:
        return f"shape {shape} of {dtype} does not fill its {end - begin} bytes"
    return ""

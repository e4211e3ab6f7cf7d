"""Import a legacy PyTorch checkpoint (``.pth``/``.pt``/``.ckpt``) into a model folder.

Checkpoints are read with ``torch.load(weights_only=True)`` only: tensors, plain containers and numbers
(numpy scalars and arrays allowed as metadata). A checkpoint that pickles other Python objects is
refused without running any of its code. The state dict is found, ``module.`` / ``model.`` prefixes are
stripped when that makes the keys match, and it is loaded strictly into the smp model the card describes.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Mapping

import torch

from ..errors import HubmapInputError
from .card import ModelCard
from .store import build_module, load_state_strict, read_weights, save_model
from .weights import tensors_only

STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "net", "weights")
"""Where training scripts usually keep the state dict inside a checkpoint dict, in order of preference."""
STRIPPABLE_PREFIXES = ("module.", "model.")
"""DataParallel/DDP (``module.``) and Lightning or wrapper (``model.``) prefixes."""


def import_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    arch: str,
    encoder: str,
    out: str | os.PathLike,
    name: str | None = None,
    **card_fields,
) -> Path:
    """Turn ``checkpoint`` into the model folder ``out`` (safetensors + card) and return ``out``.

    ``card_fields`` are any other :class:`ModelCard` fields (classes, architecture_kwargs, downscale...).
    """
    checkpoint = Path(checkpoint).expanduser()
    out = Path(out).expanduser()
    card = _make_card(checkpoint, arch, encoder, name or out.name, card_fields)
    module = build_module(card)
    state = find_state_dict(load_checkpoint(checkpoint), checkpoint)
    state = match_prefixes(state, module.state_dict())
    state = _fill_batch_counters(state, module.state_dict())
    load_state_strict(module, state, checkpoint, card)
    return save_model(module, card, out)


def _make_card(checkpoint: Path, arch: str, encoder: str, name: str, fields: dict) -> ModelCard:
    fields.setdefault("notes", f"Imported from {checkpoint.name}")
    try:
        return ModelCard(name=name, architecture=arch, encoder=encoder, **fields)
    except TypeError as error:  # an unknown keyword
        raise HubmapInputError(checkpoint, f"bad model card field for the import: {error}") from None


# --- reading -------------------------------------------------------------------------------------


def load_checkpoint(path: Path) -> object:
    """The checkpoint's content, via ``torch.load(weights_only=True)`` (or safetensors)."""
    if not path.is_file():
        raise HubmapInputError(path, "checkpoint file not found")
    if path.suffix == ".safetensors":
        return read_weights(path)
    try:
        with torch.serialization.safe_globals(_numpy_metadata_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise _refused(path, error) from None
    except Exception as error:  # not a zip/pickle, truncated, ...
        raise HubmapInputError(
            path,
            f"not a readable PyTorch checkpoint (truncated or corrupt?): {type(error).__name__}: {_first_line(error)}",
        ) from None


def _refused(path: Path, error: Exception) -> HubmapInputError:
    """The error for a checkpoint that would need unpickling arbitrary Python objects."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)  # scans, runs nothing
    except Exception:
        names = []
    allowed = {_global_name(entry) for entry in _numpy_metadata_globals()}
    names = [name for name in names if name not in allowed] or names
    objects = f" ({', '.join(names[:5])})" if names else ""
    return HubmapInputError(
        path,
        f"refused: the checkpoint holds pickled Python objects{objects} that loading would have to execute; "
        "only weights-only checkpoints are imported (torch.load weights_only=True). In the environment that "
        "made it, re-save the weights alone: torch.save(model.state_dict(), 'weights.pth')",
    )


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _global_name(entry) -> str:
    """The ``module.name`` a pickle uses for an allow-listed global (or its alias)."""
    if isinstance(entry, tuple):
        return entry[1]
    return f"{entry.__module__}.{entry.__qualname__}"


def _numpy_metadata_globals() -> list:
    """numpy scalars/arrays/dtypes often stored as metadata (epoch, best score): data, not code."""
    try:
        import numpy as np
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        try:
            import numpy as np
            from numpy.core import multiarray
        except ImportError:
            return []
    allowed: list = [np.dtype, np.ndarray, multiarray.scalar, multiarray._reconstruct]
    for old_module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed.append((multiarray.scalar, f"{old_module}.scalar"))
        allowed.append((multiarray._reconstruct, f"{old_module}._reconstruct"))
    allowed += [getattr(np.dtypes, n) for n in dir(getattr(np, "dtypes", None)) if n.endswith("DType")]
    return allowed


def find_state_dict(content: object, path: Path) -> dict[str, torch.Tensor]:
    """A raw state dict, or the one held under one of :data:`STATE_DICT_KEYS`."""
    if not isinstance(content, Mapping):
        raise HubmapInputError(path, f"checkpoint holds a {type(content).__name__}, not a state dict")
    for key in STATE_DICT_KEYS:
        inner = content.get(key)
        if isinstance(inner, Mapping) and tensors_only(inner):
            return tensors_only(inner)
    state = tensors_only(content)
    if not state:
        keys = ", ".join(map(str, list(content)[:8])) or "none"
        raise HubmapInputError(
            path, f"no state dict found (looked under {', '.join(STATE_DICT_KEYS)} and the top level; keys: {keys})"
        )
    return state


# --- matching keys -------------------------------------------------------------------------------


def match_prefixes(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The variant of ``state`` with ``module.``/``model.`` prefixes stripped that best matches ``expected``.

    Stripping is kept only when it makes more keys match; the original keys win ties.
    """
    best, best_hits = state, _hits(state, expected)
    for candidate in _stripped_variants(state):
        hits = _hits(candidate, expected)
        if hits > best_hits:
            best, best_hits = candidate, hits
    return best


def _hits(state: Mapping, expected: Mapping) -> int:
    return sum(key in expected for key in state)


def _stripped_variants(state: dict[str, torch.Tensor], depth: int = 2) -> list[dict[str, torch.Tensor]]:
    """``state`` with one or more leading prefixes removed (e.g. ``module.model.``)."""
    variants = []
    for prefix in STRIPPABLE_PREFIXES:
        if any(key.startswith(prefix) for key in state):
            stripped = {key.removeprefix(prefix): value for key, value in state.items()}
            variants.append(stripped)
            if depth > 1:
                variants += _stripped_variants(stripped, depth - 1)
    return variants


def _fill_batch_counters(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> dict:
    """Checkpoints from before PyTorch 0.4.1 lack BatchNorm ``num_batches_tracked``: use the model's."""
    missing = [key for key in expected if key not in state and key.endswith(".num_batches_tracked")]
    return {**state, **{key: expected[key].clone() for key in missing}}

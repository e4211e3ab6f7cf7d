"""Resume checkpoints: every tensor in safetensors, the rest in JSON, the folder written atomically.

A checkpoint folder (``<model folder>.checkpoint``, beside the model) holds ``tensors.safetensors``
(model, EMA and optimizer tensors flattened to names, torch's RNG state) and ``state.json`` (where the run stands: epoch
and step done, history, best score, settings, optimizer groups). Nothing is pickled. The folder is
replaced as a whole (temp folder + rename), so an interruption leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import HubmapInputError

TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"


def checkpoint_folder(model_folder: str | os.PathLike) -> Path:
    model_folder = Path(model_folder)
    return model_folder.with_name(model_folder.name + ".checkpoint")


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer ``state_dict`` as (named tensors, JSON-able rest)."""
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in rest["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def _prefixed(prefix: str, state: dict) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in state.items()}


def _unprefixed(prefix: str, tensors: dict) -> dict[str, torch.Tensor]:
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def save_checkpoint(folder: Path, *, model: dict, ema: dict, optimizer: dict, state: dict) -> None:
    """Write a checkpoint folder atomically (``state`` must be JSON-able), with torch's RNG state."""
    from safetensors.torch import save_file

    opt_tensors, opt_rest = flatten_optimizer(optimizer)
    tensors = {**_prefixed("model", model), **_prefixed("ema", ema), **opt_tensors,
               "rng.torch": torch.get_rng_state()}
    with atomic_path(folder, is_dir=True) as tmp:
        save_file(tensors, os.fspath(tmp / TENSORS_FILE))
        (tmp / STATE_FILE).write_text(json.dumps({**state, "optimizer": opt_rest}, indent=1), encoding="utf-8")


def load_checkpoint(folder: Path) -> tuple[dict, dict, dict, dict]:
    """(model state, EMA state, optimizer state, run state) of a checkpoint folder, or a clear error."""
    from safetensors.torch import load_file

    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        tensors = load_file(os.fspath(folder / TENSORS_FILE), device="cpu")
    except Exception as error:  # missing, truncated, corrupt
        raise HubmapInputError(folder, f"unreadable training checkpoint ({type(error).__name__}: {error}); "
                                       "start over with --no-resume") from None
    optimizer = unflatten_optimizer(tensors, state.pop("optimizer"))
    if "rng.torch" in tensors:  # dropout / stochastic depth continue as if never interrupted
        torch.set_rng_state(tensors["rng.torch"])
    return _unprefixed("model", tensors), _unprefixed("ema", tensors), optimizer, state

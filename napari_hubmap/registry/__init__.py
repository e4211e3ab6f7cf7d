"""Model registry: model folders (``card.json`` + ``model.safetensors``), found by name or path.

Weights are never unpickled (legacy checkpoints are imported with ``torch.load(weights_only=True)``) and
nothing is downloaded: every network is built by ``smp.create_model(..., encoder_weights=None)``.
"""

from .card import FORMAT_VERSION, ModelCard
from .legacy import import_checkpoint
from .store import (
    DEFAULT_MODEL,
    LoadedModel,
    build_module,
    find_model,
    list_models,
    load_model,
    model_search_path,
    read_card,
    save_model,
    update_card,
)

__all__ = [
    "DEFAULT_MODEL",
    "FORMAT_VERSION",
    "LoadedModel",
    "ModelCard",
    "build_module",
    "find_model",
    "import_checkpoint",
    "list_models",
    "load_model",
    "model_search_path",
    "read_card",
    "save_model",
    "update_card",
]

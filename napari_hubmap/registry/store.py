"""Model folders on disk: find them, list them, build, load and save models.

A model is a folder holding ``card.json`` (a :class:`ModelCard`) and ``model.safetensors`` (its weights).
Models are found by path or by name along :func:`model_search_path`. Weights are never unpickled, and
nothing is downloaded: networks are built by ``smp.create_model(..., encoder_weights=None)``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import atomic_path, write_text_atomic
from ..locks import FolderLock
from ..defaults import DEFAULT_MODEL  # noqa: F401 (re-exported)
from ..errors import HubmapInputError
from .card import ModelCard, utc_now
from .weights import check_safetensors_header, mismatch_summary, sha256_file, state_dict_for_saving

CARD_FILE = "card.json"
WEIGHTS_FILE = "model.safetensors"
MODELS_ENV = "NAPARI_HUBMAP_MODELS"
BUNDLED_ENV = "NAPARI_HUBMAP_BUNDLED_MODELS"


@dataclass
class LoadedModel:
    """A model ready for inference: its card, the network (eval mode, on its device) and its folder."""

    card: ModelCard
    module: torch.nn.Module
    path: Path


# --- where models live ---------------------------------------------------------------------------


def user_models_folder() -> Path:
    """``$XDG_DATA_HOME/napari-hubmap/models`` (default ``~/.local/share/napari-hubmap/models``)."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "napari-hubmap" / "models"


def repository_models_folder() -> Path:
    """The ``models/`` folder of a source checkout (it may not exist in an installed package)."""
    import napari_hubmap

    return Path(napari_hubmap.__file__).resolve().parents[1] / "models"


def packaged_models_folder() -> Path | None:
    """``napari_hubmap/bundled_models`` of an installed wheel (the repository's ``models/``, packaged), found
    through ``importlib.resources``; None in a source checkout, where the package has no such folder."""
    from importlib.resources import files

    folder = files("napari_hubmap").joinpath("bundled_models")
    return Path(str(folder)) if folder.is_dir() else None


def bundled_models_folder() -> Path | None:
    """The folder of shipped models: ``$NAPARI_HUBMAP_BUNDLED_MODELS`` when set (empty: none), else the
    installed package's (:func:`packaged_models_folder`), else the repository's ``models/`` folder."""
    override = os.environ.get(BUNDLED_ENV)
    if override is not None:
        return Path(override).expanduser() if override else None
    packaged = packaged_models_folder()
    if packaged is not None:
        return packaged
    repository = repository_models_folder()
    return repository if repository.is_dir() else None


def model_search_path() -> list[Path]:
    """Folders searched for models by name, first match wins.

    ``$NAPARI_HUBMAP_MODELS`` entries (``os.pathsep`` separated), then the user folder, then the
    bundled models (:func:`bundled_models_folder`).
    """
    entries = [Path(entry).expanduser() for entry in os.environ.get(MODELS_ENV, "").split(os.pathsep) if entry]
    entries.append(user_models_folder())
    bundled = bundled_models_folder()
    if bundled is not None:
        entries.append(bundled)
    return _unique(entries)


def _unique(paths: list[Path]) -> list[Path]:
    """``paths`` without repeats, first occurrence kept."""
    return list(dict.fromkeys(paths))


def is_model_folder(path: Path) -> bool:
    """A folder holding both ``card.json`` and ``model.safetensors``."""
    return (path / CARD_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def _check_model_folder(path: Path) -> Path:
    """``path`` itself when it is a complete model folder, else a clear error."""
    if not path.is_dir():
        raise HubmapInputError(path, "not a model folder (expected a folder with card.json and model.safetensors)")
    missing = [name for name in (CARD_FILE, WEIGHTS_FILE) if not (path / name).is_file()]
    if missing:
        raise HubmapInputError(path, f"incomplete model folder: missing {' and '.join(missing)}")
    return path


def _looks_like_path(text: str) -> bool:
    separators = [os.sep] + ([os.altsep] if os.altsep else [])
    return any(sep in text for sep in separators) or text.startswith((".", "~"))


def find_model(name_or_path: str | os.PathLike) -> Path:
    """The model folder for a path (folder, or its card.json / model.safetensors) or a name.

    A name is looked up as a sub-folder of each :func:`model_search_path` entry in order, then as the
    ``name`` of a card. Not found: an error listing the available names and the folders searched.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    given_as_path = isinstance(name_or_path, Path) or _looks_like_path(text)
    if path.exists():
        folder = path.parent if path.is_file() else path
        if given_as_path or is_model_folder(folder):
            return _check_model_folder(folder)
    elif given_as_path:
        raise HubmapInputError(text, "no such model folder")
    return _find_by_name(text)


def _find_by_name(name: str) -> Path:
    for folder in model_search_path():
        if is_model_folder(folder / name):
            return folder / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = list_models()
    for card, path in models:
        if card.name == name:
            return path
    available = ", ".join(sorted({path.name for _, path in models})) or "none"
    searched = os.pathsep.join(str(p) for p in model_search_path())
    raise HubmapInputError(
        name, f"no model of that name (available: {available}; searched {searched}; set {MODELS_ENV} to add folders)"
    )


def read_card(folder: str | os.PathLike) -> ModelCard:
    """The checked card of a model folder; errors name ``card.json``."""
    card_path = Path(folder) / CARD_FILE
    try:
        text = card_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HubmapInputError(card_path, "model card not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise HubmapInputError(card_path, f"cannot read model card: {error}") from None
    return ModelCard.from_json(text, source=card_path)


def list_models() -> list[tuple[ModelCard, Path]]:
    """Every model along the search path (a name shadows later folders of the same name).

    Folders with a card but no readable card or weights are skipped with a warning.
    """
    found: list[tuple[ModelCard, Path]] = []
    seen_names: set[str] = set()
    for root in model_search_path():
        for folder in _sub_folders(root):
            if folder.name in seen_names or not (folder / CARD_FILE).exists():
                continue
            seen_names.add(folder.name)  # as in find_model, the first folder of a name wins, broken or not
            try:
                found.append((read_card(_check_model_folder(folder)), folder))
            except HubmapInputError as error:
                warnings.warn(f"skipping broken model folder: {error}", stacklevel=2)
    return found


def _sub_folders(root: Path) -> list[Path]:
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


# --- building and loading ------------------------------------------------------------------------


def build_module(card: ModelCard, *, source: str | os.PathLike | None = None) -> torch.nn.Module:
    """The card's network with fresh weights: ``smp.create_model`` with ``encoder_weights=None``.

    smp errors (unknown encoder, bad options) become a :class:`HubmapInputError` naming ``source``
    (the card file) or the card's name.
    """
    import segmentation_models_pytorch as smp

    try:
        return smp.create_model(
            card.architecture,
            encoder_name=card.encoder,
            encoder_weights=None,
            in_channels=card.in_channels,
            classes=card.classes,
            **card.architecture_kwargs,
        )
    except Exception as error:  # smp raises KeyError, ValueError, RuntimeError, TypeError, AssertionError
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        message = " ".join(message.split())  # one line for the CLI
        message = message if len(message) <= 300 else message[:297] + "..."
        raise HubmapInputError(
            source or f"model card {card.name!r}",
            f"cannot build {card.architecture} with encoder {card.encoder!r}: {type(error).__name__}: {message}",
        ) from None


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file on the CPU; not safetensors, truncated, corrupt: a clear error."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise HubmapInputError(path, "weights file not found")
    check_safetensors_header(path)  # no pickle, and nothing of the claimed sizes allocated
    try:
        return load_file(os.fspath(path), device="cpu")
    except Exception as error:  # SafetensorError, OSError, ...
        raise HubmapInputError(
            path, f"not a readable safetensors file (truncated or corrupt?): {type(error).__name__}: {error}"
        ) from None


def load_state_strict(module: torch.nn.Module, state: dict, weights_path, card: ModelCard) -> None:
    """``load_state_dict(strict=True)``, a mismatch being a clear error naming the weights file."""
    summary = mismatch_summary(module.state_dict(), state)
    if not summary:
        try:
            module.load_state_dict(state, strict=True)
            return
        except RuntimeError as error:
            summary = str(error).splitlines()[0]
    raise HubmapInputError(
        weights_path,
        f"weights do not match the card ({card.architecture}, encoder {card.encoder}, "
        f"in_channels={card.in_channels}, classes={card.classes}): {summary}",
    )


def _check_sha256(weights_path: Path, card: ModelCard) -> None:
    if not card.weights_sha256:
        return
    actual = sha256_file(weights_path)
    if actual != card.weights_sha256:
        raise HubmapInputError(
            weights_path,
            f"sha256 {actual[:12]}... does not match the card's weights_sha256 {card.weights_sha256[:12]}... "
            "(weights changed or corrupt)",
        )


def _to_device(module: torch.nn.Module, device, folder: Path) -> torch.nn.Module:
    try:
        return module.to(torch.device(device))
    except (RuntimeError, AssertionError, ValueError, TypeError) as error:
        raise HubmapInputError(folder, f"cannot put the model on device {device!r}: {error}") from None


def load_model(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Find, check (card, sha256, keys and shapes) and load a model, in eval mode on ``device``."""
    folder = find_model(name_or_path)
    card = read_card(folder)
    weights_path = folder / WEIGHTS_FILE
    _check_sha256(weights_path, card)
    state = read_weights(weights_path)
    module = build_module(card, source=folder / CARD_FILE)
    load_state_strict(module, state, weights_path, card)
    return LoadedModel(card=card, module=_to_device(module, device, folder).eval(), path=folder)


# --- saving --------------------------------------------------------------------------------------


def _check_save_target(folder: Path) -> None:
    """Never replace a folder that is not a model folder (atomic_path would delete it)."""
    if folder.is_file():
        raise HubmapInputError(folder, "exists and is a file, not a model folder")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / CARD_FILE).is_file():
        raise HubmapInputError(folder, "exists and is not a model folder; refusing to overwrite it")


def _check_module_matches_card(state: dict, card: ModelCard, folder: Path) -> None:
    """The card must describe the module being saved, else the folder would not load back."""
    try:
        with torch.device("meta"):  # shapes only, no memory; some encoders may not build on meta
            expected = build_module(card).state_dict()
    except HubmapInputError:
        expected = build_module(card).state_dict()
    summary = mismatch_summary(expected, state)
    if summary:
        raise HubmapInputError(
            folder, f"the module does not match the card ({card.architecture}, {card.encoder}): {summary}"
        )


def save_model(module: torch.nn.Module, card: ModelCard, folder: str | os.PathLike) -> Path:
    """Write ``model.safetensors`` and ``card.json`` (with ``weights_sha256``) as one atomic folder."""
    from safetensors.torch import save_file

    folder = Path(folder).expanduser()
    _check_save_target(folder)
    state = state_dict_for_saving(module)
    _check_module_matches_card(state, card, folder)
    with model_lock(folder, f"saving model {folder.name}"), atomic_path(folder, is_dir=True) as tmp:
        save_file(state, os.fspath(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        saved = card.replace(weights_sha256=sha256_file(tmp / WEIGHTS_FILE), created=card.created or utc_now())
        (tmp / CARD_FILE).write_text(saved.to_json(), encoding="utf-8")
    return folder


def update_card(folder: str | os.PathLike, card: ModelCard) -> Path:
    """Replace the card of a model folder whose weights stay as they are (a pick made after training: threshold,
    floor, TTA picks, figures): one atomic write of ``card.json``, under the folder's lock, refused when ``card``
    names other weights than the folder holds (its ``weights_sha256``, as stored)."""
    folder = _check_model_folder(Path(folder).expanduser())
    with model_lock(folder, f"updating the card of {folder.name}"):
        stored = read_card(folder)
        if card.weights_sha256 != stored.weights_sha256:
            raise HubmapInputError(folder / CARD_FILE, "the new card names other weights than the folder holds; "
                                   "save the model instead")
        write_text_atomic(folder / CARD_FILE, card.to_json())
    return folder / CARD_FILE


def model_lock(folder, purpose: str) -> FolderLock:
    """The write lock of a model folder (beside it: saving replaces the folder whole). Reentrant: a training
    run holds it throughout and saves its best weights under it."""
    return FolderLock(folder, purpose, beside=True, reentrant=True)

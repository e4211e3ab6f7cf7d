"""The registry's models as a checklist (the Inference panel's; several ticked make an ensemble)."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidget, QListWidgetItem

from ..defaults import DEFAULT_MODEL

FOLDER_ROLE = Qt.ItemDataRole.UserRole  # the model folder
NAME_ROLE = Qt.ItemDataRole.UserRole + 1  # the card's name


def describe_metrics(metrics: dict) -> str:
    """``val Dice 0.81, F1 0.77`` for a card the trainer wrote; flat numeric metrics as they are."""
    validation = metrics.get("validation")
    if isinstance(validation, dict):
        parts = [f"{label} {validation[key]:.3g}" for key, label in (("dice", "val Dice"), ("object_f1", "F1"))
                 if isinstance(validation.get(key), (int, float))]
        return ", ".join(parts)
    return ", ".join(f"{k} {v:.3g}" for k, v in metrics.items() if isinstance(v, (int, float)))


def describe_card(card, parent=None) -> str:
    """One line per model: name, network, working scale, tile, metrics (and its parent's beside them)."""
    text = f"{card.name} — {card.architecture}/{card.encoder}, ×{card.downscale:g}"
    if card.target_mpp is not None:
        text += f" ({card.target_mpp:g} µm/px)"
    text += f", tile {card.tile}/{card.overlap}"
    metrics = describe_metrics(card.metrics)
    if metrics:
        text += " · " + metrics
    if card.parent:
        before = describe_metrics(parent.metrics) if parent is not None else ""
        text += f" · from {card.parent}" + (f" ({before})" if before else "")
    return text


class ModelChecklist(QListWidget):
    """One checkable row per ``(card, folder)`` of ``registry.list_models()``; a placeholder row otherwise."""

    def __init__(self):
        super().__init__()
        self.setMinimumHeight(80)

    def show_placeholder(self, text: str) -> None:
        self.addItem(QListWidgetItem(text))

    def fill(self, models) -> None:
        """List ``models``, keeping the ticks of those still there; the first time, the default model (or
        the only one) is ticked."""
        checked = set(self.checked())
        first = self.count() == 0 or self.item(0).data(FOLDER_ROLE) is None
        self.clear()
        by_name = {card.name: card for card, _ in models}
        for card, folder in models:
            item = QListWidgetItem(describe_card(card, by_name.get(card.parent)))
            item.setData(FOLDER_ROLE, str(folder))
            item.setData(NAME_ROLE, card.name)
            item.setToolTip(f"{folder}\n{card.notes}".strip())
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            tick = str(folder) in checked or (first and (len(models) == 1 or card.name == DEFAULT_MODEL == folder.name))
            item.setCheckState(Qt.CheckState.Checked if tick else Qt.CheckState.Unchecked)
            self.addItem(item)
        if not models:
            item = QListWidgetItem("no models found (see NAPARI_HUBMAP_MODELS)")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.addItem(item)

    def model_items(self) -> list[QListWidgetItem]:
        items = (self.item(i) for i in range(self.count()))
        return [item for item in items if item.data(FOLDER_ROLE) is not None]

    def checked(self) -> list[str]:
        """Folders of the ticked models, in list order."""
        return [item.data(FOLDER_ROLE) for item in self.model_items() if item.checkState() == Qt.CheckState.Checked]

    def set_checked(self, names_or_folders) -> None:
        """Tick exactly the models whose card name, folder name or folder path is given."""
        wanted = {str(n) for n in names_or_folders}
        for item in self.model_items():
            folder = item.data(FOLDER_ROLE)
            tick = bool({folder, Path(folder).name, item.data(NAME_ROLE)} & wanted)
            item.setCheckState(Qt.CheckState.Checked if tick else Qt.CheckState.Unchecked)

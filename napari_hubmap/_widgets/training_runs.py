"""The Training panel's trainer runs without Qt: the presets and models to start from, the command line
(``napari-hubmap train ... --events``), its stdout events, the new model's name and its metrics beside
its parent's.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
from collections import deque
from pathlib import Path

from ..errors import HubmapInputError

PRESET_KIND, MODEL_KIND = "preset", "model"
STDERR_LINES = 20
"""Last stderr lines kept for the message of a crash."""
CANCELLED_MESSAGE = "cancelled (checkpoint saved, Start resumes)"


def list_bases() -> tuple[list, list]:
    """``(presets, models)``: ``[(name, about)]`` of ``training.PRESETS`` (empty when the trainer is
    not installed) and ``registry.list_models()``. Imports torch the first time: for a thread."""
    from ..registry import list_models

    try:
        from ..training import PRESETS
    except ImportError:
        PRESETS = {}
    presets = [(name, getattr(preset, "about", "")) for name, preset in PRESETS.items()]
    return presets, list_models()


def train_command(data: list[str], kind: str, base: str, epochs: int, out, *, lr: float | None = None,
                  folds: int = 1, fold: int = 0, batch: int | None = None, samples_per_epoch: int | None = None,
                  tile: int | None = None, workers: int | None = None, stain_standardise: bool = False) -> list[str]:
    """``python -m napari_hubmap.cli train ... --events``; ``None`` options are the trainer's defaults."""
    command = [sys.executable, "-m", "napari_hubmap.cli", "train"]
    for folder in data:
        command += ["--data", str(folder)]
    command += ["--preset" if kind == PRESET_KIND else "--base", base, "--epochs", str(epochs), "--out", str(out)]
    if folds > 1:
        command += ["--folds", str(folds), "--fold", str(fold)]
    options = {"--lr": lr, "--batch": batch, "--samples-per-epoch": samples_per_epoch, "--tile": tile,
               "--workers": workers}
    for flag, value in options.items():
        if value is not None:
            command += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if stain_standardise:
        command.append("--stain-standardise")
    return command + ["--events"]


def parse_event(line: str) -> dict | None:
    """The event of one stdout line (a JSON object with an ``"event"`` string), else None."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event"), str) else None


def split_lines(buffer: str, text: str, separators: str = r"\r?\n") -> tuple[list[str], str]:
    """``(complete lines, rest)`` of ``buffer + text``: a read may end in the middle of a line."""
    *lines, rest = re.split(separators, buffer + text)
    return lines, rest


class OutputLines:
    """The trainer's stdout and stderr as lines: bytes decoded as they come (a read may end inside a
    character or a line), the last :data:`STDERR_LINES` non-blank stderr lines kept for a crash's message."""

    def __init__(self):
        self.decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in ("stdout", "stderr")}
        self.rest = {"stdout": "", "stderr": ""}
        self.stderr_tail: deque = deque(maxlen=STDERR_LINES)

    def stdout(self, data: bytes) -> list[str]:
        """The stdout lines ``data`` completes."""
        lines, self.rest["stdout"] = split_lines(self.rest["stdout"], self.decoders["stdout"].decode(data))
        return lines

    def stderr(self, data: bytes) -> list[str]:
        """The non-blank stderr lines ``data`` completes (tqdm redraws with ``\\r``, which ends a line too)."""
        lines, self.rest["stderr"] = split_lines(self.rest["stderr"], self.decoders["stderr"].decode(data),
                                                 r"\r\n|\r|\n")
        lines = [line for line in lines if line.strip()]
        self.stderr_tail.extend(lines)
        return lines

    def rest_of_stdout(self) -> str:
        """What stdout left without a line end (once the trainer ended), taken out."""
        rest, self.rest["stdout"] = self.rest["stdout"], ""
        return rest


def describe_start(event: dict, steps_per_epoch: int, resumed: int) -> str:
    return (f"Training on {event.get('train_samples', '?')} images, validating on {event.get('val_images', '?')}: "
            f"{event['epochs']} epochs of {steps_per_epoch} steps"
            + (f", resumed after epoch {resumed}" if resumed else "") + f" ({event.get('device', '?')})")


def describe_step(epoch: int, step: int, steps: int, loss) -> str:
    return f"Epoch {epoch}, step {step}/{steps}" + (f" · loss {loss:.4f}" if loss is not None else "")


def describe_epoch(event: dict) -> str:
    dice = event.get("val_dice")
    text = f"Epoch {int(event['epoch'])}/{event.get('epochs', '?')}: train loss {event['train_loss']:.4f}"
    text += f" · val Dice {dice:.3f}" if dice is not None else ""
    return text + (" (best)" if event.get("best") else "")


def cancelled_message(events: list[dict], out: Path | None) -> str:
    """How a cancelled run ended: checkpoint saved, killed (its last epoch's checkpoint left), or neither."""
    if any(e["event"] == "cancelled" for e in events):
        return CANCELLED_MESSAGE
    if out is not None and checkpoint_of(out).exists():  # killed: the checkpoint of the last epoch is left
        return "cancelled (the trainer was killed; Start resumes after its last finished epoch)"
    return "cancelled (before any checkpoint was saved)"


def failure_message(last_error: str | None, stderr_tail, exit_code: int, crashed: bool) -> str:
    """The trainer's error event, else its last stderr lines, else how it ended."""
    if last_error:
        return last_error
    how = "crashed" if crashed else f"exit code {exit_code}"
    tail = " / ".join(list(stderr_tail)[-3:])
    return f"{tail} ({how})" if tail else how


METRIC_LABELS = {"dice": "Dice", "object_f1": "object F1", "iou": "IoU", "threshold": "threshold"}


def headline_metrics(metrics: dict) -> dict:
    """A card's top-level numbers plus the Dice, object F1 and threshold of its ``validation`` entry
    (the trainer's layout); bools and nested entries left out."""
    flat = {key: value for key, value in metrics.items() if _is_number(value)}
    validation = metrics.get("validation")
    if isinstance(validation, dict):
        flat.update({key: validation[key] for key in ("dice", "object_f1", "threshold") if _is_number(validation.get(key))})
    return flat


def format_metrics(metrics: dict) -> str:
    """``Dice 0.812 · object F1 0.7`` for a card's metrics."""
    flat = headline_metrics(metrics)
    return " · ".join(f"{METRIC_LABELS.get(key, key)} {value:.3g}" for key, value in flat.items()) or "no metrics"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compare_models(model_folder, parent: str | None) -> str:
    """The new model's metrics beside its parent's (both read from their cards)."""
    from ..registry import find_model, read_card

    card = read_card(model_folder)
    text = f"{card.name}: {format_metrics(card.metrics)}"
    parent = parent or card.parent
    if not parent:
        return text + " (no parent: trained from a preset)"
    try:
        parent_card = read_card(find_model(parent))
    except HubmapInputError:
        return text + f" (parent {parent}: not found)"
    return text + f" | parent {parent_card.name}: {format_metrics(parent_card.metrics)}"


def checkpoint_of(model_folder: Path) -> Path:
    """Where the trainer keeps a run's resume checkpoint: ``<model folder>.checkpoint`` beside it."""
    return model_folder.with_name(model_folder.name + ".checkpoint")


def free_model_name(folder: Path, stem: str) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... whichever the trainer can write: no such folder yet, or
    one with a resume checkpoint (a cancelled run, which the next Start resumes)."""
    name, n = stem, 1
    while (folder / name).exists() and not checkpoint_of(folder / name).exists():
        n += 1
        name = f"{stem}-{n}"
    return name


def progress_value(epoch: int, step: int, steps_per_epoch: int) -> int:
    """Steps done over all epochs (``epoch`` is 1-based)."""
    return (max(epoch, 1) - 1) * steps_per_epoch + step

"""The bundled trainer: learn glomerulus segmentation from data folders or a curation project.

``train(TrainConfig(...), data_paths, out)`` samples tiles at the model's working scale (biased to
glomeruli, empty tissue kept), augments them with albumentations, optimises BCE + Dice (or Lovász
hinge, focal) with AdamW, warm-up and a cosine schedule, keeps an EMA of the weights, validates whole
images (Dice, object F1, threshold chosen), and registers the best weights atomically in the model
registry (``card.json`` + ``model.safetensors``). It resumes from ``<out>.checkpoint`` and runs as
DistributedDataParallel under torchrun (``napari-hubmap train --nproc N``).

Progress (:class:`napari_hubmap.progress.Progress` in optimiser steps) carries an event, a dict, as its
``details`` (``napari-hubmap train --events`` prints them as JSON lines):
``start`` {epochs, steps_per_epoch, train_samples, val_images, out, resumed_at, device, world},
``step`` {epoch, step, steps, loss, lr}, ``epoch`` {epoch, epochs, train_loss, val_dice,
val_object_f1, threshold, val_dice_by_source, lr, seconds, best}; the CLI adds ``done``, ``cancelled``
and ``error``. A cancelled run raises :class:`napari_hubmap.progress.Cancelled` once its resume checkpoint
is saved.
"""

from ..lazy import lazy_exports
from .config import LOSSES, TrainConfig
from .presets import DEFAULT_PRESET, PRESETS, Preset, preset_card

# the torch-heavy names load on first use, so ``napari-hubmap --help`` stays fast
_, __getattr__ = lazy_exports(__name__, {"loop": ("TrainResult", "train"), "sources": ("Sample", "load_sources")})

__all__ = ["DEFAULT_PRESET", "LOSSES", "PRESETS", "Preset", "Sample", "TrainConfig", "TrainResult",
           "load_sources", "preset_card", "train"]

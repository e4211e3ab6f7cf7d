"""Training settings as one dataclass, checked once, recorded in the model card and the checkpoint."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..errors import HubmapInputError
from .augment import COLOUR_AUGMENTS

LOSSES = ("bce_dice", "lovasz", "focal")
SPLITS = ("group", "image")
SELECT_BY = ("dice", "object_f1")


@dataclass
class TrainConfig:
    """Everything that decides what a training run learns.

    Scale: images are resampled to ``target_mpp`` µm/px when their source's µm/px is known, else by
    ``downscale``. Tiles of ``tile`` px are drawn ``samples_per_epoch`` times an epoch; a share
    ``positive_fraction`` is centred on a glomerulus, the rest are anywhere in tissue (empty tiles are
    kept, so the model learns what is not a glomerulus). Validation predicts whole images.

    The defaults are the recipe of the shipped ``hubmap-default`` (``benchmarks/generalisation.py``'s ``RECIPE``,
    chosen there by held-out figures: 160 px tiles at 3 µm/px, 24 epochs of 1280 tiles, batch 16, lr 2e-3, three
    tiles in ten centred on a glomerulus, the epoch picked by object F1), so ``napari-hubmap train --data DIR``
    and the Training panel train what the default model was trained with, on the user's data. Only the split
    (``group``: a patient or slide never on both sides) and the synthetic regions (none) differ: the benchmark's
    tiles have no groups.
    """

    preset: str | None = "effnet-unet"
    base: str | None = None
    """A registry model to fine-tune (its card fixes architecture and scale); overrides ``preset``."""
    name: str = ""
    tile: int = 160
    infer_tile: int = 384
    downscale: float = 4.0
    target_mpp: float | None = 3.0
    epochs: int = 24
    samples_per_epoch: int = 1280
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    loss: str = "bce_dice"
    ema_decay: float = 0.99
    bn_momentum: float = 0.1
    positive_fraction: float = 0.3
    folds: int = 1
    fold: int = 0
    split: str = "group"
    val_groups: list = field(default_factory=list)
    """Groups (patients/slides) always validated on, never trained on; with folds > 1, on top of the fold."""
    exclude_groups: list = field(default_factory=list)
    """Groups or images (``source/stem``) left out altogether, neither trained nor validated on: what a
    leave-one-source-out or cross-validation run keeps aside to be scored on afterwards."""
    val_fraction: float = 0.2
    """With folds == 1 and no val_groups: this share of the groups validates (at least one)."""
    patience: int = 10
    min_epochs: int = 3
    select_by: str = "object_f1"
    """What picks the saved epoch on the validation images: ``dice`` (mean per-image Dice) or ``object_f1``
    (pooled glomerulus F1 at IoU >= 0.5, Dice breaking ties): a few images that swing from epoch to epoch
    (coarse 1/16-scale tiles) can make mean Dice pick an early epoch that later ones beat on every source."""
    stain_standardise: bool = False
    """Move every image's tissue colour onto the training images' mean colour (:mod:`napari_hubmap.stain_standard`)
    and record that reference in the card, so that prediction moves each slide onto it too. A base model whose
    card has a reference keeps it (whatever this says): its weights learnt that colour."""
    colour_augment: str = "standard"
    """How far training tiles' colours are changed: ``standard`` (the shipped recipe) or ``strong`` (wider hue,
    stain and grey changes, channels swapped now and then; :func:`~napari_hubmap.training.augment.training_augmentation`)."""
    seed: int = 0
    workers: int = 1
    device: str = "auto"
    amp: bool = True
    thresholds: list = field(default_factory=lambda: [round(0.2 + 0.05 * i, 2) for i in range(16)])
    """Candidates for the card's threshold (0.2 .. 0.95): up to 0.8 the run of the shipped default picked the
    highest candidate at every epoch after the second, so the grid reaches higher."""
    labels: list | None = None
    """Class names of the annotation files' objects to learn (GeoJSON classification, LabelMe label); None
    learns every object. Data folders' annotation files only (not masks, not projects)."""

    def __post_init__(self) -> None:
        _check(self)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @property
    def steps_per_epoch(self) -> int:
        return self.steps_for(1)

    def steps_for(self, processes: int) -> int:
        """Steps an epoch takes when ``processes`` DDP ranks share its samples."""
        return max(1, math.ceil(self.samples_per_epoch / (self.batch * processes)))


def _bad(problem: str) -> HubmapInputError:
    return HubmapInputError(None, f"training settings: {problem}")


def _check(c: TrainConfig) -> None:
    if c.preset is None and c.base is None:
        raise _bad("give a preset or a base model")
    for name in ("tile", "infer_tile", "epochs", "samples_per_epoch", "batch", "folds", "patience", "workers"):
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "workers" else 1):
            raise _bad(f"{name} must be a positive integer, got {value!r}")
    if c.tile % 32 or c.infer_tile % 32:
        raise _bad(f"tile ({c.tile}) and infer_tile ({c.infer_tile}) must be multiples of 32")
    if not 0 <= c.fold < c.folds:
        raise _bad(f"fold must be in 0..{c.folds - 1}, got {c.fold}")
    if c.loss not in LOSSES:
        raise _bad(f"loss must be one of {', '.join(LOSSES)}, got {c.loss!r}")
    if c.select_by not in SELECT_BY:
        raise _bad(f"select_by must be one of {', '.join(SELECT_BY)}, got {c.select_by!r}")
    if c.colour_augment not in COLOUR_AUGMENTS:
        raise _bad(f"colour_augment must be one of {', '.join(COLOUR_AUGMENTS)}, got {c.colour_augment!r}")
    if c.split not in SPLITS:
        raise _bad(f"split must be one of {', '.join(SPLITS)}, got {c.split!r}")
    if not (c.lr > 0 and math.isfinite(c.lr)):
        raise _bad(f"lr must be > 0, got {c.lr!r}")
    for name, low, high in (("positive_fraction", 0, 1), ("ema_decay", 0, 1), ("val_fraction", 0, 1), ("bn_momentum", 0, 1)):
        value = getattr(c, name)
        if not low <= value <= high:
            raise _bad(f"{name} must be in [{low}, {high}], got {value!r}")
    if not c.downscale > 0 or (c.target_mpp is not None and not c.target_mpp > 0):
        raise _bad("downscale and target_mpp must be > 0")
    if c.batch < 2:
        raise _bad("batch must be at least 2 (batch normalisation needs two samples)")
    if not c.thresholds or not all(0 < t < 1 for t in c.thresholds):
        raise _bad("thresholds must be probabilities in (0, 1)")
    if c.labels is not None and not (isinstance(c.labels, list) and c.labels
                                     and all(isinstance(n, str) and n for n in c.labels)):
        raise _bad(f"labels must be None or a list of class names, got {c.labels!r}")

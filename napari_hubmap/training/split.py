"""Which samples validate: whole groups (patients/slides) or images, by fold or by name."""

from __future__ import annotations

import numpy as np

from ..errors import HubmapInputError
from .config import TrainConfig
from .sources import Sample


def _key(sample: Sample, split: str) -> str:
    return sample.group if split == "group" else sample.name


def _check_known(names, samples: list[Sample], what: str) -> None:
    known = {s.group for s in samples} | {s.name for s in samples}
    unknown = sorted(set(names) - known)
    if unknown:
        raise HubmapInputError(None, f"{what} group(s) {', '.join(unknown)} not in the data "
                                     f"(groups: {', '.join(sorted({s.group for s in samples}))})")


def without_excluded(samples: list[Sample], config: TrainConfig) -> list[Sample]:
    """The samples less ``exclude_groups`` (groups or image names): neither trained nor validated on."""
    excluded = set(config.exclude_groups)
    _check_known(excluded, samples, "excluded")
    return [s for s in samples if not (s.group in excluded or s.name in excluded)]


def split_samples(samples: list[Sample], config: TrainConfig) -> tuple[list[Sample], list[Sample]]:
    """(train, validation) after :func:`without_excluded`: ``val_groups`` always validate; k-fold over the
    other keys (sorted, seeded)."""
    samples = without_excluded(samples, config)
    forced = set(config.val_groups)
    _check_known(forced, samples, "validation")
    is_forced = [s.group in forced or s.name in forced for s in samples]
    keys = sorted({_key(s, config.split) for s, f in zip(samples, is_forced) if not f})
    rng = np.random.default_rng(config.seed)
    order = [keys[i] for i in rng.permutation(len(keys))]
    if config.folds > 1:
        if len(order) < config.folds:
            raise HubmapInputError(None, f"{config.folds} folds need at least {config.folds} {config.split}s; "
                                         f"the data has {len(order)}")
        held = set(order[config.fold::config.folds])
    elif forced:
        held = set()
    elif len(order) > 1 and config.val_fraction > 0:
        held = set(order[:max(1, round(config.val_fraction * len(order)))])
    else:
        held = set()
    val = [s for s, f in zip(samples, is_forced) if f or _key(s, config.split) in held]
    train = [s for s, f in zip(samples, is_forced) if not (f or _key(s, config.split) in held)]
    if not train:
        raise HubmapInputError(None, "nothing left to train on after the validation split")
    return train, val

"""Test-time augmentation: the 8 dihedral transforms of a square tile and their exact inverses.

Each transform acts on the last two axes of an (N, C, H, W) tensor; ``invert`` undoes it, so a
prediction made on a transformed tile is mapped back onto the original pixel grid exactly.
"""

from __future__ import annotations

import torch

# name -> (number of 90° rotations, flip left-right first)
DIHEDRAL = {
    "identity": (0, False),
    "rot90": (1, False),
    "rot180": (2, False),
    "rot270": (3, False),
    "hflip": (0, True),
    "transpose": (1, True),
    "vflip": (2, True),
    "antitranspose": (3, True),
}
PRESETS = {
    "none": ("identity",),
    "flips": ("identity", "hflip", "vflip", "rot180"),
    "d4": tuple(DIHEDRAL),
}


def resolve_tta(tta: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A preset name (none, flips, d4), a comma-separated list or a sequence of transform names."""
    if isinstance(tta, str):
        if tta in PRESETS:
            return PRESETS[tta]
        tta = [t.strip() for t in tta.split(",") if t.strip()]
    names = tuple(tta)
    unknown = [n for n in names if n not in DIHEDRAL]
    if unknown or not names:
        known = ", ".join(list(PRESETS) + list(DIHEDRAL))
        raise ValueError(f"unknown test-time augmentation {unknown or tta!r}; choose from {known}")
    return names


def apply(name: str, x: torch.Tensor) -> torch.Tensor:
    turns, flip = DIHEDRAL[name]
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, turns, dims=(-2, -1)) if turns else x


def invert(name: str, y: torch.Tensor) -> torch.Tensor:
    turns, flip = DIHEDRAL[name]
    if turns:
        y = torch.rot90(y, -turns, dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if flip else y


def card_picks(card, tta: tuple[str, ...]) -> tuple[float, float | None]:
    """A model card's threshold and outline threshold for its probabilities averaged over ``tta``: the pick of
    the preset with the same transforms (in any order) where the card holds one (``ModelCard.tta_picks``), else the
    one-pass picks (``threshold``, ``outline_threshold``)."""
    for name, transforms in PRESETS.items():
        pick = card.tta_picks.get(name)
        if pick is not None and len(tta) > 1 and set(transforms) == set(tta):
            return pick["threshold"], pick["outline_threshold"]
    return card.threshold, card.outline_threshold

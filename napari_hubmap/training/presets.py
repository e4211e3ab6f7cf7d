"""Architecture presets for the trainer: the seed notebooks' networks, each a model card to start from.

Every preset is an ``smp.create_model`` call (``encoder_weights=None``: nothing is downloaded) plus the
working scale and tile size it was tried at. ``preset_card`` turns one into a :class:`ModelCard`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import HubmapInputError

DEFAULT_PRESET = "effnet-unet"


@dataclass(frozen=True)
class Preset:
    """One architecture: smp class name, encoder, extra smp options, and a line for people."""

    architecture: str
    encoder: str
    kwargs: dict = field(default_factory=dict)
    about: str = ""
    multiple: int = 32
    """Tile sides must be a multiple of this (the encoder's output stride)."""


PRESETS: dict[str, Preset] = {
    "effnet-unet": Preset("Unet", "efficientnet-b0", {},
                          "U-Net on EfficientNet-B0 (6.3 M parameters; the default model's network)"),
    "effnet-fpn": Preset("FPN", "efficientnet-b0", {}, "FPN on EfficientNet-B0 (5.8 M parameters)"),
    "deeplabv3plus": Preset("DeepLabV3Plus", "resnet18", {},
                            "DeepLabV3+ (atrous spatial pyramid pooling) on ResNet-18 (12.3 M parameters)"),
    "swin-upernet": Preset("UPerNet", "tu-swin_tiny_patch4_window7_224", {"strict_img_size": False},
                           "UPerNet on a Swin-T transformer (timm; any tile that is a multiple of 32)"),
    "segformer": Preset("Segformer", "mit_b0", {}, "SegFormer on MiT-B0 (3.7 M parameters)"),
    "unet-resnet18": Preset("Unet", "resnet18", {}, "U-Net on ResNet-18 (14.3 M parameters)"),
}


def preset(name: str) -> Preset:
    """The preset called ``name``, or a clear error listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise HubmapInputError(None, f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})") from None


def preset_card(name: str, model_name: str, *, tile: int, downscale: float, target_mpp: float | None,
                overlap: int | None = None):
    """A fresh card for a preset (``tile``: the inference tile); the trainer adds data, metrics, threshold."""
    from ..registry import ModelCard

    chosen = preset(name)
    if tile % chosen.multiple:
        raise HubmapInputError(None, f"tile {tile} must be a multiple of {chosen.multiple} for preset {name!r}")
    return ModelCard(
        name=model_name,
        architecture=chosen.architecture,
        encoder=chosen.encoder,
        architecture_kwargs=dict(chosen.kwargs),
        downscale=float(downscale),
        target_mpp=target_mpp,
        tile=tile,
        overlap=tile // 4 if overlap is None else overlap,
        notes=f"preset {name}: {chosen.about}",
    )

"""The model card: a JSON description of one segmentation model, stored beside its weights.

``card.json`` says how to build the network (any segmentation-models-pytorch architecture and encoder,
with ``encoder_weights=None``), how to feed it (working scale, tile, overlap, normalization) and how to
read its output (logits or probabilities, threshold, smallest object in µm²). Every field is checked
when a card is made or read, so a bad card fails with one clear line naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import HubmapInputError
from ..jsonio import parse_json

FORMAT_VERSION = 1
"""The newest card format this version of napari-hubmap reads and writes."""

REQUIRED_FIELDS = ("name", "architecture", "encoder")
OUTPUT_KINDS = ("logits", "probabilities")
NORMALIZATION_KEYS = ("mean", "std", "max_pixel_value")
RESERVED_KWARGS = ("arch", "encoder_name", "encoder_weights", "in_channels", "classes")
"""Set by the registry itself; an ``architecture_kwargs`` entry may not override them."""
DEPRECATED_KWARGS = ("decoder_use_batchnorm",)
"""Old smp option names that smp 0.6 still pops from ``**kwargs`` itself."""

SIZE_LIMITS = {"in_channels": 256, "classes": 256, "tile": 16384}
"""The largest value of each size field: a card claiming more is not a model this package can run (a tile of
10**9 pixels, a normalisation repeated to 10**9 channels) and would exhaust memory before failing."""

_SHA256 = re.compile(r"[0-9a-f]{64}")


def utc_now() -> str:
    """The current time as ISO 8601 in UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def imagenet_normalization() -> dict:
    """The ImageNet mean/std on 8-bit pixels, what smp encoders are usually trained with."""
    return {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "max_pixel_value": 255.0}


@dataclass
class ModelCard:
    """What the engine needs to know about a model, besides its weights.

    ``downscale`` is the working scale (factor relative to full resolution); when ``target_mpp`` is set
    and the slide's microns per pixel is known, the working downscale is ``target_mpp / slide_mpp``.
    ``output="logits"`` means the engine applies a sigmoid; ``threshold`` applies to probabilities.
    """

    name: str
    architecture: str
    encoder: str
    in_channels: int = 3
    classes: int = 1
    architecture_kwargs: dict = field(default_factory=dict)
    downscale: float = 2.0
    target_mpp: float | None = None
    tile: int = 512
    overlap: int = 128
    normalization: dict = field(default_factory=imagenet_normalization)
    threshold: float = 0.5
    min_object_um2: float = 0.0
    """Objects smaller than this (µm²) are not glomeruli: the default minimum size of post-processing
    (0: none). The trainer sets it from its training annotations."""
    outline_threshold: float | None = None
    """The probability down to which a glomerulus found at ``threshold`` takes in the pixels connected to it: the
    default outline threshold of post-processing (hysteresis; None: outlines drawn at ``threshold``). Picked on
    the validation images, as ``threshold`` and ``min_object_um2`` are."""
    tta_picks: dict = field(default_factory=dict)
    """Threshold and outline threshold for a test-time augmentation preset's averaged probabilities
    (``{"flips": {"threshold": 0.5, "outline_threshold": null}, "d4": ...}``), picked on the validation images as
    ``threshold`` and ``outline_threshold`` are on one pass: an average of several passes rarely clears a one-pass
    cut of 0.9. A preset without a pick runs at ``threshold`` and ``outline_threshold``."""
    stain_reference: dict | None = None
    """Tissue colour (CIELAB mean and spread, :class:`~napari_hubmap.stain_standard.LabStats` as a dict) the
    model's training images were moved onto; every slide it predicts is moved onto it first. None: images as
    they are."""
    output: str = "logits"
    training_data: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    parent: str | None = None
    created: str = field(default_factory=utc_now)
    weights_sha256: str = ""
    format_version: int = FORMAT_VERSION
    notes: str = ""

    def __post_init__(self) -> None:
        _check_types(self)
        _check_values(self)

    def to_json(self) -> str:
        """Pretty JSON with sorted keys (stable diffs), ending with a newline."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source=None) -> "ModelCard":
        """Parse and check a card; errors name ``source`` (the card file) and the field."""
        data = _parse_object(text, source)
        _check_format_version(data.get("format_version", FORMAT_VERSION), source)
        _check_field_names(data, source)
        data.setdefault("created", "")
        try:
            return cls(**data)
        except HubmapInputError as error:
            raise HubmapInputError(source, error.problem) from None

    def replace(self, **changes) -> "ModelCard":
        """A checked copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def working_downscale(self, slide_mpp: float | None) -> float:
        """Factor to shrink the slide by before tiling: from ``target_mpp`` when possible (< 1: the slide is
        upsampled). The engine passes the µm/px :mod:`napari_hubmap.slide.scale` settles on (given, the
        file's, else assumed), so ``downscale`` is what a card without ``target_mpp`` works at."""
        if self.target_mpp is not None and _is_positive_number(slide_mpp):
            return snap_downscale(self.target_mpp / float(slide_mpp))
        return self.downscale


SNAP_TOLERANCE = 0.01
"""A working downscale within this fraction of a whole number is taken as that number."""


def snap_downscale(downscale: float) -> float:
    """``downscale``, or the whole number within :data:`SNAP_TOLERANCE` of it: a scanner's 0.499 µm/px at a 3 µm/px
    model gives 6.012, run as 6 (2.994 µm/px, well inside the scales training jitters over), so each working pixel
    is the mean of whole 6 x 6 squares of the slide (an exact, 5x cheaper shrink that neighbouring tiles share)
    rather than a resampling of 6.012 px steps."""
    whole = round(downscale)
    return float(whole) if whole >= 1 and abs(downscale - whole) <= SNAP_TOLERANCE * downscale else downscale


# --- parsing -------------------------------------------------------------------------------------


def _parse_object(text: str, source) -> dict:
    """The JSON object in ``text``; anything else is a clear error."""
    if not isinstance(text, (str, bytes, bytearray)):
        raise HubmapInputError(source, f"model card is not JSON text (got {type(text).__name__})")
    data = parse_json(text, source, "model card")
    if not isinstance(data, dict):
        raise HubmapInputError(source, f"model card must be a JSON object, got {type(data).__name__}")
    return data


def _check_format_version(version: Any, source) -> None:
    """Refuse cards written by a newer napari-hubmap before looking at their fields."""
    if not _is_int(version) or version < 1:
        raise HubmapInputError(source, f"card field 'format_version': expected an integer >= 1, got {version!r}")
    if version > FORMAT_VERSION:
        raise HubmapInputError(
            source,
            f"card format_version {version} is newer than this napari-hubmap supports ({FORMAT_VERSION}); "
            "upgrade napari-hubmap to use this model",
        )


def _check_field_names(data: dict, source) -> None:
    """Every required field present, no unknown (misspelt) field."""
    known = {f.name for f in dataclasses.fields(ModelCard)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise HubmapInputError(source, f"unknown card field(s) {', '.join(map(repr, unknown))}")
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise HubmapInputError(source, f"card is missing required field(s) {', '.join(map(repr, missing))}")


# --- type checks ---------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float (not true/false); an int too large for a float is not one."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _is_positive_number(value: Any) -> bool:
    return _is_number(value) and value > 0


def _bad_field(name: str, expected: str, value: Any) -> HubmapInputError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return HubmapInputError(None, f"card field '{name}': expected {expected}, got {type(value).__name__} {shown}")


def _check_types(card: ModelCard) -> None:
    """Check each field's JSON type; numbers become floats where floats are meant."""
    for name in ("name", "architecture", "encoder", "output", "created", "weights_sha256", "notes"):
        if not isinstance(getattr(card, name), str):
            raise _bad_field(name, "a string", getattr(card, name))
    if card.parent is not None and not isinstance(card.parent, str):
        raise _bad_field("parent", "a string or null", card.parent)
    for name in ("in_channels", "classes", "tile", "overlap", "format_version"):
        if not _is_int(getattr(card, name)):
            raise _bad_field(name, "an integer", getattr(card, name))
    for name in ("downscale", "threshold", "min_object_um2"):
        if not _is_number(getattr(card, name)):
            raise _bad_field(name, "a number", getattr(card, name))
        setattr(card, name, float(getattr(card, name)))
    for name in ("target_mpp", "outline_threshold"):
        value = getattr(card, name)
        if value is not None:
            if not _is_number(value):
                raise _bad_field(name, "a number or null", value)
            setattr(card, name, float(value))
    for name in ("architecture_kwargs", "normalization", "training_data", "metrics", "tta_picks"):
        setattr(card, name, _plain_json_object(name, getattr(card, name)))


def _plain_json_object(name: str, value: Any) -> dict:
    """A dict as JSON would give it back (tuples become lists), so cards round-trip exactly."""
    if not isinstance(value, dict):
        raise _bad_field(name, "an object (dict)", value)
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise HubmapInputError(None, f"card field '{name}': not plain JSON ({error})") from None


# --- value checks --------------------------------------------------------------------------------


def _check_values(card: ModelCard) -> None:
    """Ranges and consistency, after the types are known to be right."""
    _check_names(card)
    _check_sizes(card)
    _check_scale(card)
    card.architecture = canonical_architecture(card.architecture)
    _check_architecture_kwargs(card)
    card.normalization = _checked_normalization(card.normalization, card.in_channels)
    _check_stain_reference(card)
    _check_output(card)
    _check_bookkeeping(card)


def _check_stain_reference(card: ModelCard) -> None:
    from ..stain_standard import LabStats

    if card.stain_reference is None:
        return
    try:
        card.stain_reference = LabStats.from_dict(card.stain_reference).as_dict()
    except ValueError as error:
        raise HubmapInputError(None, f"card field 'stain_reference': {error}") from None


def stain_reference_of(card: ModelCard):
    """The card's reference as :class:`~napari_hubmap.stain_standard.LabStats`, or None."""
    from ..stain_standard import LabStats

    return None if card.stain_reference is None else LabStats.from_dict(card.stain_reference)


def _check_names(card: ModelCard) -> None:
    for name in REQUIRED_FIELDS:
        if not getattr(card, name).strip():
            raise HubmapInputError(None, f"card field '{name}': must not be empty")


def _check_sizes(card: ModelCard) -> None:
    for name, largest in SIZE_LIMITS.items():
        if not 1 <= getattr(card, name) <= largest:
            raise HubmapInputError(None, f"card field '{name}': must be >= 1 and <= {largest}, got {getattr(card, name)}")
    if not 0 <= card.overlap < card.tile:
        raise HubmapInputError(None, f"card field 'overlap': must be >= 0 and < tile ({card.tile}), got {card.overlap}")


def _check_scale(card: ModelCard) -> None:
    if card.downscale <= 0:
        raise HubmapInputError(None, f"card field 'downscale': must be > 0, got {card.downscale}")
    if card.target_mpp is not None and card.target_mpp <= 0:
        raise HubmapInputError(None, f"card field 'target_mpp': must be > 0 or null, got {card.target_mpp}")


def architectures() -> dict[str, type]:
    """smp's architectures by lower-case name (what ``smp.create_model`` accepts)."""
    import segmentation_models_pytorch as smp

    return dict(smp.MODEL_ARCHITECTURES_MAPPING)


def canonical_architecture(name: str) -> str:
    """``"unet"`` -> ``"Unet"``: smp's class name for an architecture name, or a clear error."""
    known = architectures()
    model_class = known.get(name.lower())
    if model_class is None:
        names = ", ".join(sorted(cls.__name__ for cls in known.values()))
        raise HubmapInputError(None, f"card field 'architecture': unknown architecture {name!r} (known: {names})")
    return model_class.__name__


def _check_architecture_kwargs(card: ModelCard) -> None:
    """No reserved names; for non-timm encoders no option smp would silently ignore."""
    reserved = sorted(set(card.architecture_kwargs) & set(RESERVED_KWARGS))
    if reserved:
        raise HubmapInputError(
            None, f"card field 'architecture_kwargs': {', '.join(reserved)} set by the card itself, not here"
        )
    if card.encoder.startswith("tu-"):
        return  # smp passes unknown options on to timm, which checks them when the model is built
    accepted = _accepted_options(card.architecture)
    unknown = sorted(set(card.architecture_kwargs) - accepted - set(DEPRECATED_KWARGS))
    if unknown:
        raise HubmapInputError(
            None,
            f"card field 'architecture_kwargs': unknown option(s) {', '.join(map(repr, unknown))} for "
            f"{card.architecture} (accepted: {', '.join(sorted(accepted))})",
        )


def _accepted_options(architecture: str) -> set[str]:
    """Named parameters of the smp model class, less those the card sets itself."""
    model_class = architectures()[architecture.lower()]
    parameters = inspect.signature(model_class.__init__).parameters.values()
    named = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named - {"self"} - set(RESERVED_KWARGS)


def _checked_normalization(normalization: dict, in_channels: int) -> dict:
    """mean/std per channel (one value is repeated to ``in_channels``), max_pixel_value > 0."""
    keys = set(normalization)
    if keys != set(NORMALIZATION_KEYS):
        raise HubmapInputError(
            None,
            f"card field 'normalization': needs exactly the keys {', '.join(NORMALIZATION_KEYS)}, "
            f"got {', '.join(sorted(map(_shown_key, keys))) or 'none'}",
        )
    result = {"max_pixel_value": normalization["max_pixel_value"]}
    if not _is_positive_number(result["max_pixel_value"]):
        raise HubmapInputError(None, "card field 'normalization': max_pixel_value must be a number > 0")
    result["max_pixel_value"] = float(result["max_pixel_value"])
    for key in ("mean", "std"):
        result[key] = _per_channel(key, normalization[key], in_channels)
    if any(value <= 0 for value in result["std"]):
        raise HubmapInputError(None, "card field 'normalization': std values must be > 0")
    return result


def _shown_key(key: str) -> str:
    """A key of the card for an error line: as is when printable, else quoted with escapes (a newline in it would
    split the line)."""
    return key if key.isprintable() else repr(key)


def _per_channel(key: str, values: Any, in_channels: int) -> list[float]:
    values = values if isinstance(values, list) else [values]
    if not values or not all(_is_number(v) for v in values) or len(values) not in (1, in_channels):
        raise HubmapInputError(
            None, f"card field 'normalization': {key} must be 1 or {in_channels} numbers, got {values!r}"
        )
    values = [float(v) for v in values]
    return values * in_channels if len(values) == 1 else values


def _check_output(card: ModelCard) -> None:
    if card.output not in OUTPUT_KINDS:
        kinds = ", ".join(OUTPUT_KINDS)
        raise HubmapInputError(None, f"card field 'output': must be one of {kinds}, got {card.output!r}")
    if not 0.0 <= card.threshold <= 1.0:
        raise HubmapInputError(None, f"card field 'threshold': must be in [0, 1] (a probability), got {card.threshold}")
    if card.outline_threshold is not None and not 0.0 <= card.outline_threshold <= 1.0:
        raise HubmapInputError(None, f"card field 'outline_threshold': must be in [0, 1] (a probability) or null, "
                                     f"got {card.outline_threshold}")
    _check_tta_picks(card.tta_picks)
    if card.min_object_um2 < 0:
        raise HubmapInputError(None, f"card field 'min_object_um2': must be >= 0 (µm²), got {card.min_object_um2}")
    activation = card.architecture_kwargs.get("activation")
    if activation not in (None, "identity") and card.output == "logits":
        raise HubmapInputError(
            None,
            f"card field 'output': architecture_kwargs.activation={activation!r} makes the model output "
            "probabilities; set output to 'probabilities'",
        )


def _check_tta_picks(picks: dict) -> None:
    """Each preset's pick: a threshold in [0, 1] and an outline threshold in [0, 1] or null, nothing else."""
    for preset, pick in picks.items():
        where = f"card field 'tta_picks.{preset}'"
        if not isinstance(pick, dict) or set(pick) != {"threshold", "outline_threshold"}:
            raise HubmapInputError(None, f"{where}: must be an object with 'threshold' and 'outline_threshold', got {pick!r}")
        for key, value in pick.items():
            if value is None and key == "outline_threshold":
                continue
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise HubmapInputError(None, f"{where}.{key}: must be in [0, 1] (a probability), got {value!r}")


def _check_bookkeeping(card: ModelCard) -> None:
    if card.weights_sha256 and not _SHA256.fullmatch(card.weights_sha256):
        raise HubmapInputError(None, "card field 'weights_sha256': expected 64 lower-case hex digits or ''")
    if card.created:
        try:
            datetime.fromisoformat(card.created.replace("Z", "+00:00"))
        except ValueError:
            raise HubmapInputError(None, f"card field 'created': not an ISO 8601 time: {card.created!r}") from None
    if card.format_version != FORMAT_VERSION:
        _check_format_version(card.format_version, None)

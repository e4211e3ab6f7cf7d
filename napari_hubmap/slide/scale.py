"""A slide's µm per pixel and where it comes from: one rule for every command and panel.

Explicit wins: a µm/px the user gives (``--mpp``, the Slide panel's field, a project's recorded
``--mpp``) is used even when the file carries another (and then said so); else the file's own (OME-XML,
Aperio description, TIFF resolution tags); else :data:`~napari_hubmap.defaults.DEFAULT_MPP` is
*assumed*. Every JSON line that depends on the scale carries the same three fields
(:meth:`SlideScale.as_dict`): ``mpp`` (the µm/px used), ``mpp_source`` (``"option"``, ``"file"`` or
``"assumed"``) and ``mpp_file`` (what the file says, or null).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..defaults import DEFAULT_MPP
from ..errors import HubmapInputError

MPP_SOURCES = ("option", "file", "assumed")
SCALE_KEYS = ("mpp", "mpp_source", "mpp_file")
"""The fields of :meth:`SlideScale.as_dict`, also in the attrs of the stores predict and postprocess write."""


def plausible_mpp(value) -> float | None:
    """A µm/px a slide file records (a number or its text) when plausible for a slide (0.01-100), else None."""
    try:
        mpp = float(value)
    except (TypeError, ValueError):
        return None
    return mpp if 0.01 <= mpp <= 100 else None


def check_mpp(value, source=None) -> float:
    """``value`` (a number or its text) as µm per pixel: finite and > 0, else one clear error."""
    try:
        mpp = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        mpp = math.nan
    if not (math.isfinite(mpp) and mpp > 0):
        raise HubmapInputError(source, f"µm per pixel must be a number > 0, got {value!r}")
    return mpp


@dataclass(frozen=True)
class SlideScale:
    """The µm/px a slide is taken at (``mpp``), its ``source`` and what the file itself says."""

    mpp: float
    source: str
    file_mpp: float | None = None

    @property
    def assumed(self) -> bool:
        return self.source == "assumed"

    @property
    def overrides_file(self) -> bool:
        """A given µm/px that differs from the file's own."""
        return self.source == "option" and self.file_mpp is not None and not math.isclose(self.mpp, self.file_mpp)

    def as_dict(self) -> dict:
        """The JSON fields every scale-dependent command prints."""
        return {"mpp": self.mpp, "mpp_source": self.source, "mpp_file": self.file_mpp}

    def describe(self) -> str:
        """For the panels: ``0.5 µm/px assumed (the file has none)``, ``0.25 µm/px (from the file)``, ..."""
        if self.assumed:
            return f"{self.mpp:g} µm/px assumed (the file has none)"
        if self.source == "file":
            return f"{self.mpp:g} µm/px (from the file)"
        return f"{self.mpp:g} µm/px (given" + (f"; the file says {self.file_mpp:g})" if self.overrides_file else ")")

    def warning(self, path) -> str | None:
        """What a command says on stderr about this scale: an assumption or a given value beating the file's."""
        if self.assumed:
            return f"{path}: no µm/px in the file; assuming {self.mpp:g} µm/px (give --mpp if it differs)"
        if self.overrides_file:
            return f"{path}: using the given {self.mpp:g} µm/px, not the file's {self.file_mpp:g}"
        return None


def slide_scale(file_mpp: float | None, given=None) -> SlideScale:
    """The rule: ``given`` (checked) wins, else the file's µm/px, else :data:`DEFAULT_MPP` assumed."""
    file_mpp = None if file_mpp is None else float(file_mpp)
    if given is not None:
        return SlideScale(check_mpp(given), "option", file_mpp)
    if file_mpp is not None:
        return SlideScale(file_mpp, "file", file_mpp)
    return SlideScale(DEFAULT_MPP, "assumed", None)


def recorded_scale(meta: dict, given=None) -> SlideScale:
    """The scale a store's attrs record (``as_dict`` fields, written by predict), ``given`` winning;
    assumed when they record none (a map made before µm/px was recorded, a mask image)."""
    file_mpp = meta.get("mpp_file")
    file_mpp = float(file_mpp) if isinstance(file_mpp, (int, float)) and file_mpp > 0 else None
    if given is not None:
        return slide_scale(file_mpp, given)
    mpp, source = meta.get("mpp"), meta.get("mpp_source")
    if source in MPP_SOURCES and isinstance(mpp, (int, float)) and mpp > 0:
        return SlideScale(float(mpp), source, file_mpp)
    return slide_scale(None)

"""What the probability and labels stores share: NGFF 0.4 multiscale attrs and the checked open.

Both are OME-Zarr (NGFF 0.4, zarr format 2) groups of 2-D levels ``0``, ``1``, ... in chunks of
:data:`CHUNK`, level k at scale ``downscale * 2**k`` (full-resolution pixels per pixel), with
``attrs["napari_hubmap"]["kind"]`` saying which store it is.
"""

from __future__ import annotations

from pathlib import Path

import zarr

from ..errors import HubmapInputError

CHUNK = 512
AXES = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]


def datasets(downscale: float, count: int, *, centred: bool = False) -> list[dict]:
    """NGFF ``datasets`` of levels 0..count-1. ``centred``: level k > 0 holds every 2**k-th pixel of
    level 0, so it also gets the translation that keeps its pixel centres on the slide."""
    out = []
    for k in range(count):
        scale = float(downscale * 2**k)
        transforms = [{"type": "scale", "scale": [scale, scale]}]
        if centred and k:
            shift = -(2**k - 1) * float(downscale) / 2
            transforms.append({"type": "translation", "translation": [shift, shift]})
        out.append({"path": str(k), "coordinateTransformations": transforms})
    return out


def multiscales(name: str, levels: list[dict], method: str) -> list[dict]:
    """The ``multiscales`` attribute of a 2-D store with ``levels`` (from :func:`datasets`)."""
    return [{"version": "0.4", "name": name, "axes": AXES, "datasets": levels, "type": method}]


def level_arrays(group: zarr.Group) -> list[zarr.Array]:
    """The levels of a store group, finest first."""
    return [group[str(k)] for k in range(len(group.attrs["multiscales"][0]["datasets"]))]


def open_store(path, kind: str, not_a_store: str, not_this_kind: str) -> tuple[list[zarr.Array], dict]:
    """(levels, ``napari_hubmap`` attrs) of one of napari-hubmap's stores of ``kind`` (``labels``,
    ``probability``); a missing path, another zarr or another kind is a clear error."""
    path = Path(path)
    if not path.exists():
        raise HubmapInputError(path, "not found")
    try:
        group = zarr.open_group(path, mode="r")
        meta = dict(group.attrs["napari_hubmap"])
        levels = level_arrays(group)
    except Exception:
        raise HubmapInputError(path, not_a_store) from None
    if meta.get("kind") != kind:
        raise HubmapInputError(path, f"is a {meta.get('kind', 'unknown')} store, not {not_this_kind}")
    return levels, meta


def kind_of(path) -> str | None:
    """The ``kind`` a napari-hubmap store at ``path`` records, or None (not such a store)."""
    try:
        group = zarr.open_group(Path(path), mode="r")
        return dict(group.attrs.get("napari_hubmap", {})).get("kind")
    except Exception:  # not a zarr group at all
        return None

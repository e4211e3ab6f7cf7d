"""What a file holds, told by its first bytes (magic numbers), not by its name.

One rule for every reader that picks a format: a file whose content is a known image format is read as
that format whatever its suffix says (a PNG named ``.tif``, a TIFF named ``.jpg``); a file whose content
is none of them gets an error naming what the content looks like (:func:`looks_like`).

And the guard against headers that lie about their size (:func:`check_claimed_bytes`), checked before any
pixel is allocated; it replaces PIL's decompression-bomb limit (:func:`no_pixel_limit`), which refuses
whole-slide masks and large flat images that are genuine.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["sniff", "looks_like", "check_claimed_bytes", "no_pixel_limit", "IMAGE_KINDS", "TIFF_KINDS"]

TIFF_KINDS = ("tiff", "bigtiff")
IMAGE_KINDS = TIFF_KINDS + ("png", "jpeg")
"""The kinds the slide and mask readers open by content."""

_HEAD_BYTES = 512
_MAGIC = (  # (prefix, kind), longest first where prefixes share bytes
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "bigtiff"),
    (b"MM\x00+", "bigtiff"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jpeg2000"),
    (b"\xffO\xffQ", "jpeg2000"),
    (b"BM", "bmp"),
    (b"PK\x03\x04", "zip"),
    (b"\x1f\x8b", "gzip"),
    (b"%PDF", "pdf"),
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
)
_NAMES = {
    "tiff": "a TIFF image",
    "bigtiff": "a BigTIFF image",
    "png": "a PNG image",
    "jpeg": "a JPEG image",
    "gif": "a GIF image",
    "jpeg2000": "a JPEG 2000 image",
    "bmp": "a BMP image",
    "webp": "a WebP image",
    "zip": "a ZIP archive (or a PyTorch checkpoint)",
    "gzip": "gzip-compressed data",
    "pdf": "a PDF document",
    "hdf5": "an HDF5 file",
    "dicom": "a DICOM file",
    "zarr": "a zarr folder",
    "folder": "a folder",
    "json": "JSON text",
    "xml": "XML text",
    "text": "plain text",
    "safetensors": "a safetensors weights file",
    "empty": "an empty file (0 bytes)",
    "missing": "nothing (no such file)",
}


def sniff(path: str | os.PathLike) -> str:
    """The kind of content at ``path``: ``tiff``, ``bigtiff``, ``png``, ``jpeg``, ``zarr``, ``dicom``, another
    key of the table above, or ``unknown``. Reads at most 512 bytes; never raises on a readable path."""
    if os.path.isdir(path):
        zarr_marks = (".zarray", ".zgroup", "zarr.json")
        return "zarr" if any(os.path.exists(os.path.join(path, m)) for m in zarr_marks) else "folder"
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unknown"
    return kind_of_bytes(head)


def kind_of_bytes(head: bytes) -> str:
    """The kind of content starting with ``head`` (see :func:`sniff`)."""
    if not head:
        return "empty"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for prefix, kind in _MAGIC:
        if head.startswith(prefix):
            return kind
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "safetensors"
    return _text_kind(head)


def _text_kind(head: bytes) -> str:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        try:  # the cut at 512 bytes may split a character
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return "unknown"
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped[:1] in ("{", "["):
        return "json"
    if stripped.startswith("<"):
        return "xml"
    printable = sum(ch.isprintable() or ch in "\t\r\n" for ch in text)
    return "text" if printable >= 0.95 * len(text) else "unknown"


def looks_like(path: str | os.PathLike, kind: str | None = None) -> str:
    """What the content at ``path`` looks like, in words (``JSON text``, ``a PNG image``, ``unrecognised
    binary data (starts 00 01 02 03)``), for error messages."""
    kind = sniff(path) if kind is None else kind
    if kind in _NAMES:
        return _NAMES[kind]
    return f"unrecognised binary data (starts {_first_bytes(path)})"


def _first_bytes(path) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(4).hex(" ") or "empty"
    except OSError:
        return "unreadable"


MAX_EXPANSION = {"none": 1, "deflate": 1100, "lzw": 3000, "packbits": 130}
"""The most each codec can expand its data (deflate's ceiling is 1032:1, LZW's ~2730:1 with 12-bit codes,
PackBits' 64:1): a header claiming more pixels than that from the bytes the file holds is lying."""
_CODEC_NAMES = {"none": "uncompressed", "deflate": "deflate", "lzw": "LZW", "packbits": "PackBits"}
TIFF_CODECS = {1: "none", 5: "lzw", 8: "deflate", 32946: "deflate", 32773: "packbits"}


def check_claimed_bytes(path, decoded_bytes: int, data_bytes: int, codec: str | None, what: str) -> None:
    """Refuse before allocating: a header claiming ``decoded_bytes`` of pixels (``what``: ``a 1000000x1000000
    image``) that ``data_bytes`` of ``codec`` data cannot hold, or that this machine's memory cannot hold."""
    from ..errors import HubmapInputError

    limit = MAX_EXPANSION.get(codec or "")
    if limit is not None and decoded_bytes > limit * data_bytes + 65536:
        raise HubmapInputError(path, f"corrupt header: it claims {what} ({_size(decoded_bytes)}), more than the "
                                     f"{_size(data_bytes)} of {_CODEC_NAMES[codec]} data the file holds")
    memory = _physical_memory()
    if memory and decoded_bytes > memory // 2:
        raise HubmapInputError(path, f"claims {what} ({_size(decoded_bytes)}), more than half this machine's "
                                     f"memory ({_size(memory)}): corrupt header, or an image to convert to a tiled TIFF")


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} bytes"


@contextlib.contextmanager
def no_pixel_limit():
    """PIL's decompression-bomb limit lifted while we open an image (check_claimed_bytes guards instead)."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved

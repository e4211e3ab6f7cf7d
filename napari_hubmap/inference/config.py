"""What an inference run does (:class:`InferenceConfig`), importable without torch (the command line builds
its options from it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..defaults import DEVICES

BLENDS = ("gaussian", "centre")
"""How overlapping tiles are blended: Gaussian weights, or each tile's centre only."""

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
"""What runs the network: ``auto`` is ONNX Runtime on the CPU when onnxruntime is installed, else torch; a GPU
always runs torch (half precision, channels-last). ``onnx-int8`` (asked for by name, never by ``auto``) runs the
ONNX graph quantised to 8 bits: faster on CPUs with VNNI, its maps a little off the float ones
(:mod:`napari_hubmap.inference.int8`)."""

__all__ = ["BACKENDS", "BLENDS", "DEVICES", "InferenceConfig"]


@dataclass
class InferenceConfig:
    """What ``predict_slide`` runs; None means "from the model card" (``mpp``: from the slide file)."""

    models: list = field(default_factory=lambda: ["default"])
    mpp: float | None = None  # the slide's µm/px when given; wins over the file's (see slide.scale)
    tta: str | tuple = "none"
    tile: int | None = None
    overlap: int | None = None
    blend: str = "gaussian"  # one of BLENDS
    device: str = "auto"  # one of DEVICES, or a torch device such as cuda:1
    backend: str = "auto"  # one of BACKENDS
    batch: int = 4
    readers: int = 1  # reader threads; more only help when decoding (JPEG, zlib) is the bottleneck
    forward_batch: int | None = None  # tiles per forward call; None: the whole batch on a GPU, 1 on CPU
    skip_background: bool = True
    tissue_saturation: float = 0.07

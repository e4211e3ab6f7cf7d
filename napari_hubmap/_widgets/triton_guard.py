"""Keep triton from crashing a process that already draws with Mesa (napari under Xvfb/llvmpipe).

Installed when any widget module is imported (``_widgets/__init__.py``), before a model is loaded.
"""

from __future__ import annotations

import importlib.abc
import sys


def mesa_llvm_loaded() -> bool:
    """Whether this process has a shared libLLVM mapped (Mesa's OpenGL drivers load one)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return any("libLLVM" in line for line in maps)
    except OSError:
        return False


class TritonGuard(importlib.abc.MetaPathFinder):
    """Refuses ``import triton`` once Mesa's libLLVM is loaded, instead of letting it crash the process.

    ``registry`` imports smp -> timm -> torchvision.ops -> torch._dynamo, which imports triton when
    installed; loaded after Mesa's libLLVM (napari's OpenGL context: llvmpipe under Xvfb, and any Mesa
    driver linking LLVM), libtriton's static LLVM initialisers bind to Mesa's LLVM symbols and segfault
    (torch 2.14 / triton 3.8 / Mesa LLVM 15). An ImportError instead makes torch see "no triton", which
    the engine never needs (it does not compile). Triton loaded before the GL context is unaffected,
and so is every process without Mesa's LLVM (the check runs when triton is first imported).
    """

    def find_spec(self, name, path=None, target=None):
        if name == "triton" and mesa_llvm_loaded():
            # ModuleNotFoundError: what both ``import`` and torch's find_spec() probes treat as "absent"
            raise ModuleNotFoundError("napari-hubmap: triton not loaded next to Mesa's libLLVM", name=name)
        return None


def install_triton_guard() -> None:
    if "triton" not in sys.modules and not any(isinstance(f, TritonGuard) for f in sys.meta_path):
        sys.meta_path.insert(0, TritonGuard())

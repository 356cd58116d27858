"""Make the CUDA-only torchvision 0.28 wheel importable next to CPU torch 2.13.

torchvision 0.28.0 is the only release that accepts torch 2.13.0, and on PyPI it is a CUDA build whose
compiled ``_C`` cannot load without libtorch_cuda. Its Python import then dies on a missing
``torchvision::nms`` operator, which takes timm, open_clip, transformers' image processors and diffusers
down with it. Declaring the two operator schemas before torchvision is imported lets its pure-Python
parts (transforms, v2) work. The compiled ops (nms, roi_align, torchvision.io) stay unavailable; vde
never uses them. On a machine where the real ``_C`` loads (CUDA torch) this does nothing.
"""

from __future__ import annotations

import importlib.util
import os

_LIBRARY = None


def install() -> bool:
    """Define the missing schemas if torchvision's compiled ops cannot load. Returns True if it did."""
    global _LIBRARY
    if _LIBRARY is not None:
        return True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    import torch

    folder = os.path.dirname(spec.origin)
    compiled = [f for f in os.listdir(folder) if f.startswith("_C") and f.endswith(".so")]
    if not compiled:
        return False
    try:
        torch.ops.load_library(os.path.join(folder, compiled[0]))
        return False
    except (OSError, RuntimeError):
        pass
    try:
        lib = torch.library.Library("torchvision", "FRAGMENT")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    except RuntimeError:  # already defined by another import path in this process
        return False
    _LIBRARY = lib
    return True


install()

"""Make the CUDA-only torchvision 0.28 wheel importable next to CPU torch 2.13, in every process of the venv.

torchvision 0.28.0 is the only release that accepts torch 2.13.0, and on PyPI it is a CUDA build whose
compiled ``_C`` cannot load without libtorch_cuda. Its Python import then dies on a missing
``torchvision::nms`` operator, which takes timm, open_clip, transformers' image processors and diffusers
down with it. Declaring the two operator schemas before torchvision is imported lets its pure-Python
parts (transforms, v2) work. The compiled ops (nms, roi_align, torchvision.io) stay unavailable; vde
never uses them. On a machine where the real ``_C`` loads (CUDA torch) this does nothing.

Importing this module only registers an import hook (no torch import, so interpreter start-up stays fast);
the fix runs when something first imports torchvision. It is imported by ``vde_torchvision.pth``, which
the install puts in site-packages (setup.py), so a user's plain ``import open_clip`` works in the venv, and
by every vde package's ``__init__`` for a source checkout that is not installed. A top-level module, not
one inside a vde package, so that start-up imports no package with a common name such as ``engine``.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

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


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs ``install`` the first time anything looks for torchvision, then steps aside."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201 - the finder protocol
        if fullname == "torchvision":
            _remove_hook()
            try:
                install()
            except Exception:  # noqa: BLE001 - a broken torch must fail in torch's own import, not here
                pass
        return None  # the normal finders import it


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _BeforeTorchvision)]


def install_hook() -> None:
    """Apply the fix before torchvision's first import (at once if it has been imported already)."""
    if "torchvision" in sys.modules:
        install()
    elif not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())


install_hook()

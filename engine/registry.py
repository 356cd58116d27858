"""Stage names as pipeline files use them, mapped to their classes.

Each package lists its stages as ``STAGES = {"name": "module:Class"}`` in its ``__init__``; classes are
imported only when a pipeline uses them, so validating a CPU pipeline never imports torch.
"""

from __future__ import annotations

import importlib

from engine.stage import Stage

PACKAGES = ("engine", "filters", "captioners", "shards")


def known_stages() -> dict[str, str]:
    """Stage name -> "module:Class" for every package that declares stages."""
    names: dict[str, str] = {}
    for package in PACKAGES:
        try:
            module = importlib.import_module(package)
        except ImportError:
            continue
        names.update(getattr(module, "STAGES", {}))
    return names


def stage_class(name: str) -> type[Stage]:
    target = known_stages()[name]
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise TypeError(f"{target} is not a Stage subclass")
    return cls

"""The scorers, one file each. Every module here is found at import: a frame scorer is a ``Scorer``
subclass (the ``score`` stage measures it on decoded frames), a declaration of columns another stage writes
is a module-level ``DECLARATIONS`` list. The order of their ``declaration.order`` is the filter's funnel
order: cheap technical properties first, content scores after."""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil

from filters.scorer import Declaration, Scorer


@functools.cache
def _modules() -> tuple:
    return tuple(importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
                 if not m.name.startswith("_"))


@functools.cache
def frame_scorers() -> tuple[type[Scorer], ...]:
    """The scorers the ``score`` stage runs, in funnel order."""
    found = [obj for module in _modules() for obj in vars(module).values()
             if inspect.isclass(obj) and issubclass(obj, Scorer) and obj is not Scorer
             and obj.__module__ == module.__name__]
    return tuple(sorted(found, key=lambda cls: cls.declaration.order))


@functools.cache
def declarations() -> tuple[Declaration, ...]:
    """Every declaration (frame scorers and columns other stages write), in funnel order; names unique."""
    found = [cls.declaration for cls in frame_scorers()]
    found += [d for module in _modules() for d in getattr(module, "DECLARATIONS", ())]
    names = [d.name for d in found]
    if len(set(names)) != len(names):
        raise TypeError(f"two scorers share a name: {sorted(n for n in names if names.count(n) > 1)}")
    return tuple(sorted(found, key=lambda d: d.order))

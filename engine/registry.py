"""What plugs into vde, found by entry points: the core names no plugin.

Each plugin package declares what it adds in its distribution's entry points (vde's own in pyproject.toml):

- ``vde.stages``: stage name as pipeline files use it -> ``module:Class`` (a ``Stage`` subclass)
- ``vde.commands``: any name -> ``module:register``, called with the CLI's subparsers to add subcommands
- ``vde.tiny_models``: ``tiny:NAME`` -> ``module:builder`` (engine/tiny.py)
- ``vde.reports``: any name -> ``module:build``, called with a run's output root after ``vde demo``

Targets are imported only when used, so validating a CPU pipeline never imports torch. Run from a source
checkout, vde's own entries come from the checkout's pyproject.toml rather than the installed metadata, so
an entry added there counts before the next ``pip install -e .``; other distributions add theirs as usual.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import tomllib
from pathlib import Path
from typing import Any

from engine.stage import Stage

STAGES, COMMANDS, TINY_MODELS, REPORTS = "vde.stages", "vde.commands", "vde.tiny_models", "vde.reports"
DISTRIBUTION = "vde"
_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


@functools.cache
def _checkout_entry_points() -> dict[str, dict[str, str]] | None:
    """vde's entry points from the source checkout's pyproject.toml; None when not run from a checkout."""
    try:
        project = tomllib.loads(_PYPROJECT.read_text()).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return project.get("entry-points", {}) if project.get("name") == DISTRIBUTION else None


@functools.cache
def entry_points(group: str) -> dict[str, str]:
    """``name -> "module:attr"`` of every entry point in ``group``, vde's own first, in declaration order."""
    checkout = _checkout_entry_points()
    found: dict[str, str] = dict((checkout or {}).get(group, {}))
    others: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        is_vde = dist is not None and dist.name == DISTRIBUTION
        if is_vde and checkout is not None:
            continue  # the checkout's declaration is newer than what was installed from it
        (found if is_vde else others)[ep.name] = ep.value
    return {**found, **{k: v for k, v in others.items() if k not in found}}


def load(target: str) -> Any:
    """The object an entry point names (``module:attr``)."""
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def plugin_modules() -> list[str]:
    """Top-level modules that plug in (for their loggers): every package an entry point names."""
    groups = (STAGES, COMMANDS, TINY_MODELS, REPORTS)
    return sorted({t.split(":")[0].split(".")[0] for g in groups for t in entry_points(g).values()})


def known_stages() -> dict[str, str]:
    """Stage name -> "module:Class" for every registered stage."""
    return entry_points(STAGES)


def stage_class(name: str) -> type[Stage]:
    target = known_stages()[name]
    cls = load(target)
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise TypeError(f"{target} is not a Stage subclass")
    return cls

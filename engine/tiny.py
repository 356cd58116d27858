"""``tiny:NAME`` model names: tiny random-weight models of the real architectures, built offline on first use.

They let the demo and the tests run every model stage with no network and no weights, through the same
loading code real models take. Packages register their builders as ``vde.tiny_models`` entry points
(engine/registry.py); a builder gets a folder that does not exist yet, saves the model there with the
library's own format plus ``engine.models.UNTRAINED_MARKER``, and returns the path to load (the folder, or
a file inside it). Models are built once into ``$VDE_TINY_MODELS`` (default ``~/.cache/vde/tiny-models``)
via a temporary folder and a rename, so parallel workers never see half a model.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "tiny:"
RECORD = "vde_tiny.json"  # in each built folder: which file or folder to load


def known() -> dict[str, str]:
    """``NAME -> "module:builder"`` of every registered tiny model."""
    from engine.registry import TINY_MODELS, entry_points

    return entry_points(TINY_MODELS)


def cache_dir() -> Path:
    return Path(os.environ.get("VDE_TINY_MODELS", "~/.cache/vde/tiny-models")).expanduser()


def tiny_path(name: str, cache: str | Path | None = None) -> str:
    """The path of tiny model ``name``, built on first use."""
    builders = known()
    if name not in builders:
        raise ValueError(f"unknown tiny model '{name}'; known: {', '.join(sorted(builders))}")
    module_name, _, function = builders[name].partition(":")
    module = importlib.import_module(module_name)
    root = Path(cache).expanduser() if cache else cache_dir()
    final = root / f"{name}-v{getattr(module, 'TINY_VERSION', 1)}"
    if not (final / RECORD).exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".tmp-{uuid.uuid4().hex}-{name}"
        try:
            built = Path(getattr(module, function)(tmp))
            (tmp / RECORD).write_text(json.dumps({"name": name, "load": str(built.relative_to(tmp))}))
            try:
                tmp.rename(final)
                log.info("built tiny untrained model %s in %s", name, final)
            except OSError:  # another worker built it first: keep theirs
                if not (final / RECORD).exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(final / json.loads((final / RECORD).read_text())["load"]).rstrip("/.")


def resolve_name(name: str) -> str:
    """``tiny:<name>`` -> the path of that tiny model (built on first use); any other name unchanged."""
    return tiny_path(name[len(PREFIX):].strip()) if name.startswith(PREFIX) else name

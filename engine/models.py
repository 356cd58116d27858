"""Finding model weights: a local directory, then the local hub cache, then a download if allowed.

Every model-loading stage resolves its weights through ``resolve_model`` so users and tests take the same
path. ``missing_models`` runs before a pipeline starts and lists every model that is neither on disk nor
downloadable, with how to provide it, so a run never dies on its first clip for want of weights.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from engine import tiny
from engine.stage import ModelRef

log = logging.getLogger(__name__)

# Files whose presence shows a local directory holds a model of each kind.
MARKERS = {
    "transformers": ("config.json",),
    "diffusers": ("config.json",),
    "open_clip": ("open_clip_config.json", "config.json"),
}
UNTRAINED_MARKER = "vde_untrained.json"  # written by tests next to tiny random-weight models


class ModelNotFound(FileNotFoundError):
    pass


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "VDE_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


def is_untrained(path: str | Path) -> bool:
    """True for the tiny random-weight models tests build; their output is labelled as such."""
    p = Path(path)
    return (p / UNTRAINED_MARKER).exists() or (p.parent / UNTRAINED_MARKER).exists()


def resolve_model(ref: ModelRef, download: bool | None = None) -> str:
    """Return a local path holding ``ref``'s weights, downloading only if allowed and needed."""
    if ref.name.startswith(tiny.PREFIX):
        name = ref.name[len(tiny.PREFIX):].strip()
        if name not in tiny.known():
            raise ModelNotFound(f"there is no tiny model '{name}' (tiny models: {', '.join(sorted(tiny.known()))})")
        return tiny.resolve_name(ref.name)
    local = Path(os.path.expanduser(ref.name))
    if local.exists():
        if local.is_dir() and ref.kind in MARKERS and not any((local / m).exists() for m in MARKERS[ref.kind]):
            raise ModelNotFound(f"{local} has none of {MARKERS[ref.kind]}; it is not a saved {ref.kind} model")
        return str(local)
    if ref.kind == "file" or ref.name.startswith(("/", "./", "../", "~")):
        raise ModelNotFound(f"no such file or directory: {ref.name}")
    repo = ref.name.split(":", 1)[0] if ref.kind == "open_clip" else ref.name
    if ref.kind == "open_clip" and "/" not in repo:
        return ref.name  # an open_clip architecture name with a pretrained tag: open_clip resolves the tag
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo, local_files_only=True)
    except Exception:  # noqa: BLE001 - not in the cache; fall through to a download if allowed
        pass
    if download is False or (download is None and offline()):
        raise ModelNotFound(f"'{repo}' is not in the local hub cache and downloads are off (HF_HUB_OFFLINE=1)")
    try:
        return snapshot_download(repo)
    except Exception as exc:  # noqa: BLE001
        raise ModelNotFound(f"'{repo}' is not cached and could not be downloaded ({type(exc).__name__})") from exc


def missing_models(refs: list[ModelRef]) -> list[str]:
    """One problem per model that cannot be had, each saying how to provide it. A command to run is put on
    a line of its own, so a terminal never wraps it in the middle."""
    problems = []
    for ref in refs:
        try:
            resolve_model(ref)
        except ModelNotFound as exc:
            problems.append(f"model '{ref.field}' = '{ref.name}' is missing: {exc}. {provide_hint(ref)}")
    return problems


def provide_hint(ref: ModelRef, flag: bool = False) -> str:
    """How to provide a missing model: a pipeline key to set, or (``flag``) a command-line option to pass."""
    source = f" It comes from {ref.source}." if ref.source else ""
    use = (lambda value: f"pass {ref.field} {value}") if flag else (
        lambda value: f"set '{ref.field}: {value}' in the pipeline file")
    if ref.name.startswith(tiny.PREFIX):
        return f"Use one of the tiny models listed, or {use('HUB_ID_OR_DIR')}."
    if ref.kind == "file" or _is_path(ref.name):
        return f"Put it at that path, or {use('PATH')} where it is.{source}"
    repo = ref.name.split(":", 1)[0]
    return (f"On a machine with network, download it with\n\n      hf download {repo} --local-dir DIR\n\n"
            f"    and {use('DIR')} (or point HF_HOME at a cache that holds it).{source}")


def _is_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.sep in name and Path(os.path.expanduser(name)).exists()

"""Files on any filesystem fsspec knows: listing inputs, content ids, local copies, atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
from fsspec.core import url_to_fs

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (
    ".mp4", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".m4v", ".ts", ".mts", ".flv", ".wmv", ".3gp", ".ogv",
)
FINGERPRINT_CHUNK = 1 << 20


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def list_inputs(spec: str) -> list[str]:
    """Expand an input spec into sorted video URIs.

    ``spec`` is a directory (searched recursively for video extensions), a glob, a ``.txt`` file with
    one URI per line (``#`` comments allowed), a single video, or any of these as an fsspec URL.
    A URI listed in a text file is kept even if it does not exist: it becomes an error row, not a crash.
    """
    if spec.endswith(".txt") and not _looks_like_glob(spec):
        fs, path = url_to_fs(spec)
        with fs.open(path, "r") as handle:
            lines = [ln.strip() for ln in handle.read().splitlines()]
        base = os.path.dirname(spec)
        uris = []
        for line in lines:
            if not line or line.startswith("#"):
                continue
            uris.append(line if "://" in line or os.path.isabs(line) else os.path.join(base, line))
        return uris
    fs, path = url_to_fs(spec)
    protocol = _protocol(spec)
    if _looks_like_glob(spec):
        found = fs.glob(path)
    elif fs.isdir(path):
        found = [p for p in fs.find(path) if p.lower().endswith(VIDEO_EXTENSIONS)]
    elif fs.exists(path):
        found = [path]
    else:
        raise FileNotFoundError(f"input '{spec}' does not exist (give a directory, a glob, a .txt list or a video)")
    return sorted(_join(protocol, p) for p in found)


def _looks_like_glob(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def _protocol(uri: str) -> str:
    return uri.split("://", 1)[0] if "://" in uri else ""


def _join(protocol: str, path: str) -> str:
    if protocol in ("", "file"):
        return path if protocol == "" else f"file://{path}"
    return f"{protocol}://{path.split('://', 1)[-1]}"


def fingerprint(uri: str) -> tuple[str, int]:
    """Content-derived id and size: sha256 over the size, the first and the last MiB.

    Reading two MiB instead of the whole file keeps ingest cheap on multi-GB videos; renaming or moving a
    file keeps its id, and re-encoding it changes the id.
    """
    fs, path = url_to_fs(uri)
    size = int(fs.size(path))
    digest = hashlib.sha256(str(size).encode())
    with fs.open(path, "rb") as handle:
        digest.update(handle.read(FINGERPRINT_CHUNK))
        if size > 2 * FINGERPRINT_CHUNK:
            handle.seek(size - FINGERPRINT_CHUNK)
            digest.update(handle.read(FINGERPRINT_CHUNK))
        elif size > FINGERPRINT_CHUNK:
            digest.update(handle.read())
    return digest.hexdigest()[:16], size


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """A local path for ``uri``: itself when local, else a temporary download removed afterwards."""
    if is_local(uri):
        yield local_path(uri)
        return
    suffix = Path(uri.split("?", 1)[0]).suffix
    with tempfile.NamedTemporaryFile(suffix=suffix, prefix="vde-") as tmp:
        with fsspec.open(uri, "rb") as src:
            while chunk := src.read(8 << 20):
                tmp.write(chunk)
        tmp.flush()
        yield tmp.name


def output_fs(root: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = url_to_fs(root)
    return fs, path.rstrip("/")


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write to a temporary name next to ``path`` and rename it into place, so a reader (or a resumed
    run) never sees half a file."""
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{path.rsplit('/', 1)[-1]}"
    with fs.open(tmp, "wb") as handle:
        handle.write(data)
    fs.mv(tmp, path)


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])

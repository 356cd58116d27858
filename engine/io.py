"""Files on any filesystem fsspec knows: listing inputs, content ids, local copies, atomic writes.

Only regular files are ever opened as inputs: a FIFO would block the reader forever, a device never ends.
Writes go to a ``.tmp-*`` name first. On a local disk the data and its folder are fsynced before the rename,
so a crash leaves the old file or the new one, never an empty one. Object stores have no rename (fsspec's
``mv`` is copy-then-delete) but replace an object whole on each upload, so there a write goes straight to
its final name; what marks a set of objects as one finished unit is the marker a run writes last
(``run.json``, ``shards/index.json``), never the presence of the objects themselves.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
from fsspec.core import url_to_fs

from engine.stage import OK, error_fields

log = logging.getLogger(__name__)

# What a folder is searched for: containers FFmpeg demuxes that carry video (animated GIF included).
VIDEO_EXTENSIONS = (
    ".mp4", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".m4v", ".ts", ".mts", ".m2ts", ".flv", ".wmv",
    ".asf", ".3gp", ".3g2", ".ogv", ".ogg", ".mxf", ".vob", ".dv", ".f4v", ".nut", ".y4m", ".ivf", ".gif",
)
FINGERPRINT_CHUNK = 1 << 20
TEMP_PREFIX = ".tmp-"


class InputError(Exception):
    """One input cannot be read (not a regular file, an HTTP error, ...): the message says why."""


class InputSpecError(FileNotFoundError):
    """The ``--input`` spec names nothing to process: the message says what was looked for."""


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_regular(uri: str) -> None:
    """Raise ``InputError`` unless a local ``uri`` is a regular file (symlinks are followed).

    Decided from ``stat`` alone: opening a FIFO to look at it would already block."""
    if not is_local(uri):
        return
    try:
        mode = os.stat(local_path(uri)).st_mode
    except FileNotFoundError:
        return  # the open that follows says so in its own words
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a file")
    raise InputError(f"not a regular file ({kind})")


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def list_inputs(spec: str) -> list[str]:
    """Expand an input spec into sorted video URIs.

    ``spec`` is a directory (searched recursively for video extensions), a glob, a ``.txt`` file with
    one URI per line (``#`` comments allowed), a single video, or any of these as an fsspec URL.
    A URI listed in a text file is kept even if it does not exist: it becomes an error row, not a crash.
    A spec that yields no input at all raises ``InputSpecError``.
    """
    if spec.endswith(".txt") and not _looks_like_glob(spec):
        try:
            check_regular(spec)
        except InputError as exc:
            raise InputSpecError(f"input list '{spec}': {exc}") from None
        fs, path = url_to_fs(spec)
        with fs.open(path, "r") as handle:
            lines = [ln.strip() for ln in handle.read().splitlines()]
        base = os.path.dirname(spec)
        uris = []
        for line in lines:
            if not line or line.startswith("#"):
                continue
            uris.append(line if "://" in line or os.path.isabs(line) else os.path.join(base, line))
        if not uris:
            raise InputSpecError(f"input list '{spec}' names no video (one URI per line, # for comments)")
        return uris
    protocol = _protocol(spec)
    if protocol in ("http", "https"):  # one URL: its row says how the server answered (404, 403, ...)
        return [spec]
    fs, path = url_to_fs(spec)
    if _looks_like_glob(spec):
        found = [p for p in fs.glob(path) if not fs.isdir(p)]
        if not found:
            raise InputSpecError(f"no files match '{spec}'")
    elif fs.isdir(path):
        everything = fs.find(path)
        found = [p for p in everything if p.lower().endswith(VIDEO_EXTENSIONS)]
        if not found:
            raise InputSpecError(f"no videos found under {spec} (looked for {', '.join(VIDEO_EXTENSIONS)}; "
                                 f"{len(everything)} other file(s) there)")
        others = sorted({os.path.splitext(p)[1].lower() or "(none)" for p in everything} - set(VIDEO_EXTENSIONS))
        if len(found) < len(everything):
            log.info("ignoring %d file(s) under %s with other extensions (%s)", len(everything) - len(found), spec,
                     ", ".join(others))
    elif fs.exists(path):
        found = [path]
    else:
        raise InputSpecError(f"input '{spec}' does not exist (give a directory, a glob, a .txt list or a video)")
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
    file keeps its id, and re-encoding it changes the id. Raises ``InputError`` for a local file that is not
    a regular file and for an HTTP error, saying which.
    """
    check_regular(uri)
    fs, path = url_to_fs(uri)
    try:
        return _fingerprint(fs, path)
    except FileNotFoundError as exc:
        if _protocol(uri) in ("http", "https"):
            raise InputError(_http_cause(exc)) from None
        raise
    except OSError as exc:
        if _protocol(uri) in ("http", "https"):
            raise InputError(_http_cause(exc)) from None
        raise


def _http_cause(exc: BaseException) -> str:
    """What an HTTP failure was: fsspec reports a 404 (and a failed size probe) as FileNotFoundError."""
    cause = exc.__cause__ or exc.__context__
    status = getattr(cause, "status", None) or getattr(exc, "status", None)
    if status:
        return f"HTTP {status} {getattr(cause, 'message', '') or ''}".strip()
    if isinstance(exc, FileNotFoundError) and not cause:
        return "HTTP 404 Not Found"
    return f"HTTP request failed ({type(cause or exc).__name__}: {cause or exc})"


def _fingerprint(fs: fsspec.AbstractFileSystem, path: str) -> tuple[str, int]:
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


def mark_duplicates(rows: list[dict]) -> list[dict]:
    """Turn every row whose content an earlier row already has into an error row naming that earlier input,
    under an id of its own (so the manifest keeps both rows). ``rows`` are ingest rows in input order.

    The content id hashes only the head and tail of a file, so equal ids are confirmed byte for byte; files
    that differ in between keep their row and get an id from their whole content instead."""
    first: dict[str, str] = {}
    out = []
    for row in rows:
        vid = row["video_id"]
        if row["status"] == OK and vid in first:
            if content_sha256(row["uri"]) == content_sha256(first[vid]):
                row = {**row, "video_id": "dup-" + hashlib.sha256(row["uri"].encode()).hexdigest()[:12],
                       **error_fields("ingest", row["uri"], f"duplicate: same content as {first[vid]}")}
            else:
                row = {**row, "video_id": content_sha256(row["uri"])[:16]}
                first.setdefault(row["video_id"], row["uri"])
        elif row["status"] == OK:
            first[vid] = row["uri"]
        out.append(row)
    return out


def content_sha256(uri: str) -> str:
    """sha256 of a whole file, read in chunks."""
    digest = hashlib.sha256()
    with fsspec.open(uri, "rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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


def is_local_fs(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "file" in protocols or "local" in protocols


def temp_name(path: str) -> str:
    """A unique temporary name next to ``path``: the ``.tmp-`` prefix that readers skip and a run cleans."""
    parent, name = path.rsplit("/", 1) if "/" in path else (".", path)
    return f"{parent}/{TEMP_PREFIX}{uuid.uuid4().hex}-{name}"


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes, durable: bool = True) -> None:
    """Put ``data`` at ``path`` so that a reader (or a resumed run) never sees half a file.

    Local: write a temporary name, fsync it, rename it into place, fsync the folder (the rename itself is
    only durable once its directory entry is). Object stores: one upload, which replaces the object whole.
    ``durable=False`` skips the fsyncs (still atomic against a killed process; after a power cut the file
    may be empty): for files that can be computed again."""
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if not is_local_fs(fs):
        fs.pipe_file(path, data)
        return
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(parent)


def fsync_dir(folder: str) -> None:
    """Make renames and creations in a local ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):  # file systems that cannot fsync a directory
            raise
    finally:
        os.close(fd)


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])

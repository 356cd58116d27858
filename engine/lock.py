"""The output root's guard: one run at a time, a writable output before any work, no leftovers of a killed run.

``OUT/_state/lock`` is a small JSON record (host, pid, process start, start time, a token, last heartbeat).
On a local disk it is created with ``O_EXCL``, so of two runs exactly one gets it. A lock whose process is
gone (same host: the pid is dead or now belongs to a younger process) or whose heartbeat is older than
``stale_after_s`` (another host, an object store) is stale: the next run takes it over with a warning.
Object stores have no exclusive create: there the lock is written, read back after a pause, and kept only if
it still holds this run's token, which catches all but a near-simultaneous start.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

from engine.errors import UserError
from engine.io import TEMP_PREFIX, fsync_dir, is_local_fs, join, output_fs, write_atomic

log = logging.getLogger(__name__)

LOCK = "_state/lock"
STALE_AFTER_S = 15 * 60.0  # a lock whose heartbeat is this old is taken over (hosts that cannot check the pid)
HEARTBEAT_S = 60.0
OBJECT_STORE_SETTLE_S = 1.0  # pause between writing and re-reading a lock on an object store
# Folders of the output root a run writes (and so must be able to), and where its temporaries can be left.
RUN_FOLDERS = ("manifest", "manifest/videos", "manifest/clips", "clips", "shards", "_state", "_state/results",
               "_state/latents", "report")
STORAGE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                  errno.EEXIST, errno.EISDIR}

_held: dict[str, int] = {}  # lock paths this process holds -> nesting depth (vde demo runs vde run inside)
_held_guard = threading.Lock()


class OutputError(UserError):
    """The output cannot be used (in use by another run, not writable, a file where a folder must be)."""


def _process_start(pid: int) -> str | None:
    """When ``pid`` started, in clock ticks since boot (Linux), so a reused pid is not mistaken for the holder."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    return started is None or _process_start(pid) in (None, started)


class OutputLock:
    """``with OutputLock(out):`` holds ``out``'s lock; raises ``OutputError`` naming the holder if another
    live run has it. Re-entrant within one process."""

    def __init__(self, output: str, stale_after_s: float = STALE_AFTER_S, heartbeat_s: float = HEARTBEAT_S):
        self.output = output
        self.fs, self.root = output_fs(output)
        self.path = join(self.root, LOCK)
        self.local = is_local_fs(self.fs)
        self.stale_after_s, self.heartbeat_s = stale_after_s, heartbeat_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- the record ----------------------------------------------------------------------------------------
    def _record(self) -> dict:
        now = time.time()
        return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
                "started": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
                "heartbeat": now, "token": self.token}

    def holder(self) -> dict | None:
        """The current lock record, None if there is none; an unreadable record reads as {}."""
        try:
            with self.fs.open(self.path, "rb") as handle:
                record = json.loads(handle.read() or b"{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def is_stale(self, record: dict) -> bool:
        if self.local and record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
            return not _alive(record["pid"], record.get("pid_start"))
        age = time.time() - float(record.get("heartbeat") or 0)
        return age > self.stale_after_s

    @staticmethod
    def describe(record: dict) -> str:
        if not record:
            return "an unreadable lock record"
        return f"pid {record.get('pid')} on {record.get('host')}, started {record.get('started')}"

    # -- taking and giving back -------------------------------------------------------------------------------
    def acquire(self) -> None:
        with _held_guard:
            if self.path in _held:
                _held[self.path] += 1
                return
            self._take()
            _held[self.path] = 1
        self._beat = threading.Thread(target=self._heartbeat, name="vde-lock-heartbeat", daemon=True)
        self._beat.start()

    def _take(self) -> None:
        self.fs.makedirs(join(self.root, "_state"), exist_ok=True)
        for _ in range(3):
            if self._create():
                return
            record = self.holder()
            if record is None:
                continue  # released between our attempt and the read: try again
            if not self.is_stale(record):
                raise OutputError(f"{self.output} is in use by another run ({self.describe(record)}); wait for it "
                                  f"to finish or use another --output (lock: {self.path})")
            log.warning("taking over the stale lock of %s (%s): that run is gone", self.output,
                        self.describe(record))
            self._break(record)
        raise OutputError(f"could not take the lock {self.path}: other runs keep taking it")

    def _create(self) -> bool:
        data = json.dumps(self._record()).encode()
        if self.local:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            try:
                os.write(fd, data)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                os.unlink(self.path)
                raise
            os.close(fd)
            fsync_dir(join(self.root, "_state"))
            return True
        if self.fs.exists(self.path):
            return False
        self.fs.pipe_file(self.path, data)
        time.sleep(OBJECT_STORE_SETTLE_S)
        return (self.holder() or {}).get("token") == self.token

    def _break(self, stale: dict) -> None:
        """Remove a stale lock, but only that one: a run that took it over meanwhile keeps its own."""
        if not self.local:
            if (self.holder() or {}).get("token") == stale.get("token"):
                self.fs.rm(self.path)
            return
        aside = join(self.root, "_state", f"{TEMP_PREFIX}stale-lock-{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        with open(aside, "rb") as handle:
            moved = handle.read()
        try:
            if json.loads(moved or b"{}").get("token") != stale.get("token"):
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)  # it was a fresh lock: put it back
        except ValueError:
            pass
        os.unlink(aside)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                record = self.holder()
                if not record or record.get("token") != self.token:
                    log.warning("the lock of %s was taken by %s", self.output, self.describe(record or {}))
                    return
                write_atomic(self.fs, self.path, json.dumps({**record, "heartbeat": time.time()}).encode())
            except OSError as exc:
                log.warning("cannot refresh the lock %s: %s", self.path, exc)

    def release(self) -> None:
        with _held_guard:
            depth = _held.get(self.path, 0)
            if depth > 1:
                _held[self.path] = depth - 1
                return
            _held.pop(self.path, None)
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if (self.holder() or {}).get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self.path)

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def check_output(output: str, write: bool = True) -> None:
    """Raise ``OutputError`` unless every folder a run writes under ``output`` is a folder and (``write``)
    accepts a file (a read-only mount, a full disk, a file named ``clips``): said before any work."""
    fs, root = output_fs(output)
    try:
        if fs.exists(root) and not fs.isdir(root):
            raise OutputError(f"{output} is a file, not a folder: choose another --output")
        for folder in ("", *RUN_FOLDERS):
            path = join(root, folder) if folder else root
            if fs.exists(path) and not fs.isdir(path):
                raise OutputError(f"{path} is a file where the run needs a folder: move it away or choose "
                                  f"another --output")
        if not write:
            return
        fs.makedirs(root, exist_ok=True)
        for folder in ("", *RUN_FOLDERS):
            path = join(root, folder) if folder else root
            if folder and not fs.exists(path):
                continue
            write_atomic(fs, join(path, f"{TEMP_PREFIX}writable"), b"vde writability check\n")
            fs.rm(join(path, f"{TEMP_PREFIX}writable"))
    except OSError as exc:
        raise OutputError(storage_message(output, exc)) from None


def storage_message(output: str, exc: OSError) -> str:
    """One line for a storage failure: what, where, and what to do."""
    what = exc.strerror or str(exc)
    where = exc.filename or output
    hint = {errno.EROFS: "mount it writable or choose another --output",
            errno.ENOSPC: "free some space or choose another --output",
            errno.EDQUOT: "free some space or choose another --output",
            errno.EACCES: "fix its permissions or choose another --output",
            errno.EPERM: "fix its permissions or choose another --output",
            errno.ENOTDIR: "a file stands where a folder must be: move it away"}.get(exc.errno,
                                                                                   "choose another --output")
    return f"cannot write to {output}: {what} ({where}); {hint}"


def clean_temporaries(output: str) -> int:
    """Delete the ``.tmp-*`` files a killed run left in the output root and in the run's folders (never in
    folders a run does not own, such as inputs kept under the output). Returns how many were removed."""
    fs, root = output_fs(output)
    removed = 0
    top = {folder.split("/", 1)[0] for folder in RUN_FOLDERS}
    candidates = [p for p in _ls(fs, root) if p.rstrip("/").rsplit("/", 1)[-1].startswith(TEMP_PREFIX)]
    for folder in sorted(top):
        path = join(root, folder)
        if fs.isdir(path):
            candidates += [p for p in fs.find(path) if p.rsplit("/", 1)[-1].startswith(TEMP_PREFIX)]
    for path in candidates:
        if fs.isdir(path):
            continue
        with contextlib.suppress(FileNotFoundError):
            fs.rm(path)
            removed += 1
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run under %s", removed, output)
    return removed


def _ls(fs, path: str) -> list[str]:
    try:
        return fs.ls(path, detail=False)
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def guard_output(output: str) -> Iterator[OutputLock]:
    """What every run does first: take the lock, check the output is writable, remove temporaries a killed
    run left. Raises ``OutputError`` with one clear message."""
    check_output(output, write=False)  # a file named _state would otherwise fail the lock obscurely
    try:
        lock = OutputLock(output)
        lock.acquire()
    except OSError as exc:
        raise OutputError(storage_message(output, exc)) from None
    try:
        check_output(output)
        clean_temporaries(output)
        yield lock
    finally:
        lock.release()

"""Which run's outputs are current: one generation at a time, made current by one atomic step.

A run writes ``_state/in_progress.json`` (run id, generation, host, pid, phase) before it touches anything.
While its phase is ``working`` it writes only under ``_state/`` and new files under ``clips/``, so the previous
generation (``manifest/``, ``shards/``, the stages' reports and ``run.json``) stays whole and readable. It then
switches the phase to ``committing``, rewrites those files (each via a temporary name and a rename) and
writes ``run.json`` last, naming the new generation and run id: that rename is the commit. The marker is
removed afterwards; a marker whose run id is the one in ``run.json`` belongs to a finished run.

Readers (``vde inspect``, ``verify``, ``report``, ``train``) call ``state()``: a run that is ``working`` (or
stopped while working) leaves the last complete generation readable; one stopped while ``committing`` leaves
a mix of two generations, which readers refuse until a rerun of the same command finishes it.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone

from engine.io import join, output_fs, write_atomic

RUN_FILE = "run.json"
MARKER = "_state/in_progress.json"
WORKING, COMMITTING, FAILED = "working", "committing", "failed"


class IncompleteOutput(RuntimeError):
    """The output holds no complete generation to read."""


@dataclass(kw_only=True, slots=True)
class OutputState:
    run: dict | None  # run.json of the current complete generation
    marker: dict | None  # the in-progress marker of a later run that has not finished

    @property
    def readable(self) -> bool:
        """A complete generation exists and no half-committed one overlays it."""
        return self.run is not None and (self.marker is None or self.marker.get("phase") != COMMITTING)

    def note(self) -> str:
        """What a reader must tell the user about a later unfinished run ("" when there is none)."""
        m = self.marker
        if m is None:
            return ""
        who = f"run {m.get('run_id')} (started {m.get('started')} on {m.get('host')}, pid {m.get('pid')})"
        if m.get("phase") == COMMITTING:
            return (f"{who} was interrupted while replacing the outputs (or is doing so now): they mix two runs. "
                    f"Rerun the same command to finish it.")
        if m.get("phase") == FAILED:
            return f"{who} stopped: {m.get('cause')}. The outputs are those of the last complete run."
        return f"{who} is in progress or was interrupted; the outputs are those of the last complete run."

    def require(self, output: str) -> dict:
        """run.json of the readable generation, or IncompleteOutput saying why there is none."""
        if self.readable:
            return self.run  # type: ignore[return-value]
        if self.run is None and self.marker is None:
            raise IncompleteOutput(f"{output} holds no finished run ({RUN_FILE} missing)")
        raise IncompleteOutput(f"{output}: no complete run to read. {self.note()}".strip())


def _read(fs, path: str) -> dict | None:  # noqa: ANN001 - an fsspec filesystem
    try:
        with fs.open(path, "rb") as handle:
            data = json.loads(handle.read())
    except (FileNotFoundError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def state(output: str) -> OutputState:
    fs, root = output_fs(output)
    run, marker = _read(fs, join(root, RUN_FILE)), _read(fs, join(root, MARKER))
    if marker is not None and run is not None and marker.get("run_id") == run.get("run_id"):
        marker = None  # committed; only the marker's removal was left
    return OutputState(run=run, marker=marker)


def begin(output: str, run_id: str) -> dict:
    """Write the marker of a new run (phase ``working``); returns it."""
    fs, root = output_fs(output)
    previous = _read(fs, join(root, RUN_FILE)) or {}
    marker = {"run_id": run_id, "generation": int(previous.get("generation", 0)) + 1, "phase": WORKING,
              "started": datetime.now(timezone.utc).isoformat(), "host": socket.gethostname(), "pid": os.getpid()}
    write_atomic(fs, join(root, MARKER), json.dumps(marker, indent=1).encode())
    return marker


def set_phase(output: str, marker: dict, phase: str, cause: str = "") -> None:
    fs, root = output_fs(output)
    marker.update(phase=phase, **({"cause": cause} if cause else {}))
    write_atomic(fs, join(root, MARKER), json.dumps(marker, indent=1).encode())


def finish(output: str) -> None:
    """Remove the marker after run.json (the commit) is in place."""
    fs, root = output_fs(output)
    path = join(root, MARKER)
    if fs.exists(path):
        fs.rm(path)


def guard(output: str) -> str | None:
    """For readers: the reason to refuse ``output`` (a run stopped mid-commit), else None. A later run that is
    still working (or stopped while working) is logged as a warning: the files are the last complete run's."""
    import logging

    try:
        current = state(output)
    except Exception:  # noqa: BLE001 - not an output this can judge: let the reader say what is wrong
        return None
    if current.marker is not None and current.marker.get("phase") == COMMITTING:
        return f"{output}: {current.note()}"
    if current.note():
        logging.getLogger(__name__).warning("%s", current.note())
    return None

"""The completion index: what the next run's plan will find stored, per partition, written as a run commits.

A rerun's check (``vde run --dry-run``) would walk every stage over every stored result (engine.results'
``make_plan``): at ten million clips, a re-read of everything. The index ``_state/completion.json`` holds the
fingerprint of every stage and, per partition of the inputs (engine.partitions), a digest of the partition's
video ids and how many rows each stage before the first barrier processed (every one of them stored, so the
next plan reuses them all) and how many rows wait for the barrier. The check reads this one small file and
walks stored results only for partitions whose videos changed (every partition when a fingerprint did).

The index is removed as a run begins and written once the run has committed, so a killed run never leaves one
that describes results it did not finish. A partition holding an error of kind "unexpected" (not stored: the
next run retries it) gets no entry, nor does a pipeline that uses one stage twice (its two uses share their
bookkeeping columns).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.io import join, output_fs, write_atomic
from engine.manifest import _first_per_key
from engine.partitions import partition_of
from engine.results import Plan
from engine.stage import SEEN_PREFIX, UNEXPECTED, Stage, todo_mask

INDEX = "_state/completion.json"
VERSION = 1


def video_digest(video_ids: pa.Array | pa.ChunkedArray) -> str:
    """One digest of a set of video ids (order and repeats do not matter)."""
    ids = pc.unique(video_ids).sort().to_pylist() if len(video_ids) else []
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()


class CompletionRecorder:
    """Counts, as a run commits its manifest partition by partition, what the next plan will find."""

    def __init__(self, stages: Sequence[Stage], fingerprints: Sequence[str], partitions: int):
        names = [s.name for s in stages]
        split = next((i for i, s in enumerate(stages) if s.fan_out), None)
        self.barrier = next((i for i, s in enumerate(stages) if s.barrier), None)
        self.counted = names[:self.barrier] if self.barrier is not None else names
        # stages up to the splitter process videos: their bookkeeping is copied onto each of a video's clips
        self.per_video = set(names[:split + 1]) if split is not None else set(names)
        if self.barrier is not None:  # the plan counts the rows the stage after the barrier would process
            self.after_barrier = stages[min(self.barrier + 1, len(stages) - 1)]
        self.head = {"version": VERSION, "stages": names, "fingerprints": list(fingerprints),
                     "partitions": partitions}
        self.usable = len(set(names)) == len(names)
        self.entries: dict[int, dict] = {}
        self.waiting: np.ndarray | None = None

    def before_barrier(self, rows: pa.Table) -> None:
        """The rows as the first barrier gets them."""
        ids = rows.column("video_id").filter(todo_mask(self.after_barrier, rows))
        self.waiting = np.bincount(partition_of(ids, self.head["partitions"]), minlength=self.head["partitions"])

    def partition(self, index: int, rows: pa.Table) -> None:
        """Partition ``index``'s rows, one per key, with their bookkeeping columns."""
        if "error_kind" in rows.column_names and pc.any(pc.equal(rows.column("error_kind"), UNEXPECTED)).as_py():
            return
        one_per_video = rows.take(_first_per_key(rows, [rows.column("video_id")], last=True))
        reused = []
        for name in self.counted:
            column = SEEN_PREFIX + name
            source = one_per_video if name in self.per_video else rows
            count = pc.sum(pc.fill_null(source.column(column), 0)).as_py() if column in source.column_names else 0
            reused.append(int(count or 0))
        self.entries[index] = {"videos": one_per_video.num_rows, "digest": video_digest(rows.column("video_id")),
                               "reused": reused}

    def write(self, output: str) -> None:
        if not self.usable or (self.barrier is not None and self.waiting is None):
            return
        for index, entry in self.entries.items():
            entry["waiting"] = int(self.waiting[index]) if self.waiting is not None else 0
        doc = {**self.head, "entries": {str(k): v for k, v in sorted(self.entries.items())}}
        fs, root = output_fs(output)
        write_atomic(fs, join(root, INDEX), json.dumps(doc).encode())


def clear(output: str) -> None:
    """Remove the index: the run that begins changes the stored results it describes."""
    fs, root = output_fs(output)
    path = join(root, INDEX)
    if fs.exists(path):
        fs.rm(path)


@dataclass(kw_only=True, slots=True)
class Known:
    """Rows the index answers for: per stage, rows reused (stages before the first barrier) or waiting for it."""

    barrier: int | None = None
    reused: list[int] = field(default_factory=list)
    waiting: int = 0
    videos: int = 0

    def add_to(self, plan: Plan) -> Plan:
        """``plan`` (made over the other videos) with these rows added: the plan of every video."""
        for index, step in enumerate(plan.steps):
            if self.barrier is not None and index >= self.barrier:
                step.maybe += self.waiting
            elif index < len(self.reused):
                step.reused += self.reused[index]
        return plan


def read(output: str, stages: Sequence[Stage], fingerprints: Sequence[str], videos: pa.Table,
         partitions: int) -> tuple[Known, pa.Table]:
    """What the index knows of ``videos`` for this pipeline, and the videos it does not cover."""
    fs, root = output_fs(output)
    path = join(root, INDEX)
    try:
        with fs.open(path, "rb") as handle:
            doc = json.load(handle)
    except (FileNotFoundError, OSError, ValueError):
        return Known(), videos
    head = {"version": VERSION, "stages": [s.name for s in stages], "fingerprints": list(fingerprints),
            "partitions": partitions}
    if any(doc.get(k) != v for k, v in head.items()) or not videos.num_rows:
        return Known(), videos
    barrier = next((i for i, s in enumerate(stages) if s.barrier), None)
    known = Known(barrier=barrier, reused=[0] * len(doc["stages"] if barrier is None else doc["stages"][:barrier]))
    where = partition_of(videos.column("video_id"), partitions)
    order = np.argsort(where, kind="stable")
    bounds = np.searchsorted(where[order], np.arange(partitions + 1))
    ordered = videos.take(pa.array(order))
    uncovered = []
    for k in range(partitions):
        rows = ordered.slice(bounds[k], bounds[k + 1] - bounds[k])
        if not rows.num_rows:
            continue
        entry = doc["entries"].get(str(k))
        if entry is None or entry["digest"] != video_digest(rows.column("video_id")):
            uncovered.append(rows)
            continue
        known.reused = [a + b for a, b in zip(known.reused, entry["reused"])]
        known.waiting += entry["waiting"]
        known.videos += rows.num_rows
    rest = pa.concat_tables(uncovered) if uncovered else videos.slice(0, 0)
    return known, rest

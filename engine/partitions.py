"""Partitions of a run's rows by video id, so that no step on the driver needs every row at once.

A partition is a range of video ids (``partition_of``): the order of ids is kept, so partition ``k``'s rows,
sorted, come right after partition ``k - 1``'s and the manifest's parts (``manifest/clips/part-00000.parquet``,
...) read in name order give the table one sorted file would. Finished rows stream from the executor into a
``Spool`` (``_state/spool/<run>/``, Parquet files per partition, discarded after the run); the manifest is
then compacted one partition at a time (engine.run).
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.io import join, output_fs, write_atomic

log = logging.getLogger(__name__)

VIDEOS_PER_PARTITION = 20_000  # a run of n inputs has ceil(n / this) partitions
SPOOL_ROWS = 200_000  # the spool writes its buffers out once they hold this many rows
SPOOL = "_state/spool"
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_DIGITS = 6  # leading characters that place an id
_BELOW = np.searchsorted(_HEX, np.arange(256), side="left")  # per byte: the hex digits that sort below it
_IS_HEX = np.isin(np.arange(256), _HEX)


def partition_count(videos: int) -> int:
    return max(1, -(-videos // VIDEOS_PER_PARTITION))


def partition_of(video_ids: pa.Array | pa.ChunkedArray, partitions: int) -> np.ndarray:
    """The partition of each id: ids in ascending (byte) order get non-decreasing partitions; hex ids
    (content ids) spread evenly."""
    if partitions <= 1 or len(video_ids) == 0:
        return np.zeros(len(video_ids), np.int64)
    head = pc.utf8_rpad(pc.utf8_slice_codeunits(video_ids, 0, _DIGITS), _DIGITS, "\0")
    if isinstance(head, pa.ChunkedArray):
        head = head.combine_chunks()
    offsets = np.frombuffer(head.buffers()[1], np.int32)[head.offset:head.offset + len(head) + 1]
    data = np.frombuffer(head.buffers()[2], np.uint8)
    # a character wider than one byte makes a row longer than _DIGITS bytes: its first bytes still order it
    rows = data[offsets[:-1, None] + np.arange(_DIGITS)[None, :]]
    # An id is read as a hex number of _DIGITS digits. At its first other character the number stops: just
    # above every hex id it sorts after (or at 0 when none), so that the order of ids is kept.
    hexed = _IS_HEX[rows]
    stop = np.where(hexed.all(axis=1), _DIGITS, np.argmin(hexed, axis=1))
    below = _BELOW[rows[np.arange(len(rows)), np.minimum(stop, _DIGITS - 1)]]
    column = np.arange(_DIGITS)[None, :]
    digits = np.where(column < stop[:, None], _BELOW[rows], np.where(below > 0, 15, 0)[:, None])
    at_stop = column == stop[:, None]
    digits = np.where(at_stop, np.maximum(below - 1, 0)[:, None], digits)
    value = (digits * (16 ** np.arange(_DIGITS - 1, -1, -1))[None, :]).sum(axis=1)
    return value * partitions // 16 ** _DIGITS


class Spool:
    """Rows of a run, written by partition as they come; read back one partition at a time, in arrival order."""

    def __init__(self, output: str, run_id: str, partitions: int):
        self.fs, root = output_fs(output)
        self.folder = join(root, SPOOL, run_id)
        self.partitions = partitions
        self.buffers: list[list[pa.Table]] = [[] for _ in range(partitions)]
        self.rows = 0
        self.files = [0] * partitions

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self.partitions == 1:
            self.buffers[0].append(table)
        else:
            where = partition_of(table.column("video_id"), self.partitions)
            order = np.argsort(where, kind="stable")
            bounds = np.searchsorted(where[order], np.arange(self.partitions + 1))
            ordered = table.take(pa.array(order))
            for k in range(self.partitions):
                if bounds[k + 1] > bounds[k]:
                    self.buffers[k].append(ordered.slice(bounds[k], bounds[k + 1] - bounds[k]))
        self.rows += table.num_rows
        if self.rows >= SPOOL_ROWS:
            self.flush()

    def flush(self) -> None:
        for k, pieces in enumerate(self.buffers):
            if not pieces:
                continue
            buffer = io.BytesIO()
            pq.write_table(pa.concat_tables(pieces, promote_options="permissive").combine_chunks(), buffer)
            # no fsync: the spool only lives as long as the run that reads it back
            write_atomic(self.fs, join(self.folder, f"{k:05d}", f"{self.files[k]:06d}.parquet"), buffer.getvalue(),
                         durable=False)
            self.files[k] += 1
            self.buffers[k] = []
        self.rows = 0

    def read(self, k: int) -> pa.Table | None:
        """Partition ``k``'s rows in the order they came (None: it has none)."""
        tables = [pq.read_table(self._open(join(self.folder, f"{k:05d}", f"{n:06d}.parquet")))
                  for n in range(self.files[k])] + self.buffers[k]
        return pa.concat_tables(tables, promote_options="permissive") if tables else None

    def _open(self, path: str):  # noqa: ANN202 - a binary file object
        with self.fs.open(path, "rb") as handle:
            return io.BytesIO(handle.read())

    def discard(self) -> None:
        if self.fs.exists(self.folder):
            self.fs.rm(self.folder, recursive=True)
        parent = self.folder.rsplit("/", 1)[0]
        if self.fs.exists(parent) and not self.fs.ls(parent, detail=False):
            self.fs.rm(parent, recursive=True)


def discard_spools(output: str) -> None:
    """Remove every run's spool under ``output`` (a killed run leaves its own behind)."""
    fs, root = output_fs(output)
    folder = join(root, SPOOL)
    if fs.exists(folder):
        fs.rm(folder, recursive=True)

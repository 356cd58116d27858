"""Manifests.

Executors hand every finished batch back to the run (``engine.run``); ``compact`` turns the run's rows into
``manifest/videos`` and ``manifest/clips``: one row per key, sorted, timing and bookkeeping columns (``_*``)
left out, so the manifest depends on the inputs and the pipeline only, never on how the run went (a killed
run, rerun, gives the bytes of an uninterrupted one). Resume lives in the stages' stored results
(``engine.results``), not here.
"""

from __future__ import annotations

import functools
import io
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.io import join, output_fs, write_atomic
from engine.stage import BASE_COLUMNS, CLIPS_IN_VIDEO, ERROR, ERROR_COLUMNS, RAN_PREFIX, TIMING_PREFIX, conform

log = logging.getLogger(__name__)

ROWS_PER_FILE = 500_000


def _keys(table: pa.Table) -> pa.ChunkedArray | pa.Array:
    """Each row's key: its clip_id, or ``<video_id>:video`` for a row without a clip."""
    clip = table.column("clip_id")
    return pc.if_else(pc.is_valid(clip), clip, pc.binary_join_element_wise(table.column("video_id"),
                                                                          pa.scalar(":video"), ""))


def _first_per_key(table: pa.Table, keys: list, last: bool = False, rank: pa.Array | None = None) -> pa.Array:
    """Positions, ascending, of the first row (``last``: the last) per distinct key; with ``rank``, of the
    first row of the lowest rank per key. Arrow's group-by: no Python object per row."""
    n = table.num_rows
    position = np.arange(n, dtype=np.int64)
    order = (n - 1 - position) if last else position
    if rank is not None:
        order = np.asarray(pc.fill_null(rank, 0).to_numpy(zero_copy_only=False), np.int64) * n + order
    names = [f"_k{i}" for i in range(len(keys))]
    grouped = pa.table({**dict(zip(names, keys)), "_order": order}).group_by(names, use_threads=False) \
        .aggregate([("_order", "min")]).column("_order_min").to_numpy()
    if rank is not None:
        grouped = grouped % n if n else grouped
    chosen = (n - 1 - grouped) if last else grouped
    return pa.array(np.sort(chosen))


class Manifest:
    def __init__(self, output: str):
        self.output = output.rstrip("/")
        self.fs, self.root = output_fs(output)

    # -- final manifest ---------------------------------------------------------------------------------
    def compact(self, table: pa.Table, schema: dict[str, pa.DataType], video_columns: list[str],
                video_stages: tuple[str, ...] = (), write: bool = True,
                observe: Callable[[pa.Table], None] | None = None
                ) -> tuple[pa.Table, pa.Table, dict[str, float], dict[str, int]]:
        """manifest/videos and manifest/clips from the run's rows (written unless ``write`` is False); returns
        them, the seconds per stage and the rows each stage computed in this run. Columns come in ``schema``'s
        order with its types, whatever order the run's batches had. ``video_stages`` ran before the splitter:
        their numbers are counted once per video, not once per clip. ``observe`` sees the rows, one per key,
        with their bookkeeping columns."""
        schema = {**schema, "clip_id": schema.get("clip_id", pa.string())}
        table = conform(table, schema)
        table = table.select([*schema, *sorted(c for c in table.column_names if c not in schema)])
        table = table.cast(pa.schema([pa.field(f.name, schema.get(f.name, f.type)) for f in table.schema]))
        table = table.take(_first_per_key(table, [_keys(table)]))
        if observe is not None:
            observe(table)

        timing_cols = [c for c in table.column_names if c.startswith("_")]
        clip_rows = table.filter(pc.is_valid(table.column("clip_id")))
        video_rows = self._video_rows(table, [c for c in video_columns if c in table.column_names])
        timings: dict[str, float] = {}
        computed: dict[str, int] = {}
        one_per_video = table.take(_first_per_key(table, [table.column("video_id")], last=True))
        for col in timing_cols:
            for prefix, into in ((TIMING_PREFIX, timings), (RAN_PREFIX, computed)):
                if col.startswith(prefix):
                    stage = col[len(prefix):]
                    # a video-level stage's numbers per video were copied onto each of its clips by the splitter
                    source = one_per_video if stage in video_stages else table
                    total = pc.sum(pc.fill_null(source.column(col), 0)).as_py() or 0
                    into[stage] = float(total) if into is timings else int(total)
        clips = clip_rows.drop_columns(timing_cols).sort_by([("video_id", "ascending"), ("start_frame", "ascending")])
        videos = video_rows.drop_columns([c for c in timing_cols if c in video_rows.column_names])
        videos = videos.sort_by([("video_id", "ascending")])
        if write:
            self.write_table("videos", videos)
            self.write_table("clips", clips)
        return videos, clips, timings, computed

    def compact_partitions(self, parts: Iterable[pa.Table | None], schema: dict[str, pa.DataType],
                           video_columns: list[str], video_stages: tuple[str, ...] = (),
                           observe: Callable[[int, pa.Table], None] | None = None
                           ) -> tuple[pa.Table, pa.Table, list[int], dict[str, float], dict[str, int]]:
        """``compact`` one partition at a time (each ``parts`` item: a partition's rows, None when it has none),
        writing ``part-{k:05d}.parquet`` of videos and clips for partition k. Returns every video and clip
        (partitions in order: sorted, as one ``compact`` would give them), where each partition's clips begin
        (then their count), the seconds per stage and the rows each stage computed. ``observe(k, rows)`` sees
        partition k's rows as ``compact`` does."""
        videos, clips, bounds, written = [], [], [0], {"videos": [], "clips": []}
        timings: dict[str, float] = defaultdict(float)
        computed: dict[str, int] = defaultdict(int)
        for index, rows in enumerate(parts):
            if rows is None:
                rows = pa.table({c: pa.array([], t) for c, t in {**BASE_COLUMNS, "clip_id": pa.string()}.items()})
            seen = None if observe is None else functools.partial(observe, index)
            v, c, seconds, ran = self.compact(rows, schema, video_columns, video_stages, write=False, observe=seen)
            del rows
            for name, table in (("videos", v), ("clips", c)):
                written[name].append(self.write_part(name, index, table))
            videos.append(v)
            clips.append(c)
            bounds.append(bounds[-1] + c.num_rows)
            for stage, value in seconds.items():
                timings[stage] += value
            for stage, value in ran.items():
                computed[stage] += value
        for name, keep in written.items():
            self.remove_parts(name, keep)
        concat = [pa.concat_tables(t, promote_options="permissive") for t in (videos, clips)]
        return concat[0], concat[1], bounds, dict(timings), dict(computed)

    def add_clip_columns(self, clips: pa.Table, added: pa.Table, bounds: list[int] | None = None) -> pa.Table:
        """Join ``added`` (keyed by clip_id) into the clips manifest and rewrite it, one part per partition
        (``bounds``: each partition's first row, then the row count; default one part)."""
        new = [c for c in added.column_names if c != "clip_id"]
        clips = clips.drop_columns([c for c in new if c in clips.column_names])
        # A positional take instead of Table.join: Arrow's hash join rejects list columns (scene_cuts, ...).
        take = pc.index_in(clips.column("clip_id"), value_set=added.column("clip_id"))
        for name in new:
            clips = clips.append_column(name, added.column(name).take(take))
        self.write_parts("clips", split_at(clips, bounds or [0, clips.num_rows]))
        return clips

    def write_clips(self, clips: pa.Table) -> None:
        self.write_table("clips", clips)

    def _video_rows(self, table: pa.Table, video_columns: list[str]) -> pa.Table:
        """One row per video: its metadata, its status (error if it produced an error before splitting) and
        its clip count."""
        columns = list(dict.fromkeys([*video_columns, CLIPS_IN_VIDEO] if CLIPS_IN_VIDEO in table.column_names
                                     else video_columns))
        # per video its first clip-less row (it carries the video's own error, if any), else its first row
        with_clip = pc.is_valid(table.column("clip_id")).cast(pa.int8()) if "clip_id" in table.column_names \
            else pa.array(np.zeros(table.num_rows, np.int8))
        chosen = _first_per_key(table, [table.column("video_id")], rank=with_clip)
        picked = table.take(chosen)
        rows = picked.select(columns)
        # A clip-level error (a scorer failing on one clip) is not the video's error.
        has_clips = pc.is_valid(picked.column("clip_id")) if "clip_id" in table.column_names \
            else pa.array([False] * rows.num_rows)
        for name in ERROR_COLUMNS:
            if name in rows.column_names:
                value = pa.scalar("ok" if name == "status" else None, pa.string())
                rows = rows.set_column(rows.schema.get_field_index(name), name,
                                       pc.if_else(has_clips, value, rows.column(name)))
        return rows

    def write_table(self, name: str, table: pa.Table) -> None:
        """``table`` as ``manifest/<name>/part-NNNNN.parquet`` of ``ROWS_PER_FILE`` rows (atomic writes; stale
        parts removed)."""
        self.write_parts(name, [table.slice(start, ROWS_PER_FILE)
                                for start in range(0, max(table.num_rows, 1), ROWS_PER_FILE)])

    def write_parts(self, name: str, parts: list[pa.Table]) -> None:
        """``parts[k]`` as ``manifest/<name>/part-{k:05d}.parquet`` (atomic writes; stale parts removed)."""
        written = [self.write_part(name, k, part) for k, part in enumerate(parts)]
        self.remove_parts(name, keep=written)

    def write_part(self, name: str, index: int, table: pa.Table) -> str:
        buffer = io.BytesIO()
        # one chunk per column: Parquet's pages follow Arrow's chunks, which follow how the run was batched
        pq.write_table(table.combine_chunks(), buffer, compression="zstd")
        path = join(self.root, "manifest", name, f"part-{index:05d}.parquet")
        write_atomic(self.fs, path, buffer.getvalue())
        return path

    def remove_parts(self, name: str, keep: list[str]) -> None:
        folder = join(self.root, "manifest", name)
        for path in self.fs.ls(folder, detail=False) if self.fs.exists(folder) else []:
            if path not in keep and path.endswith(".parquet"):
                self.fs.rm(path)

    # -- reading ----------------------------------------------------------------------------------------
    def read(self, name: str, columns: list[str] | None = None) -> pa.Table:
        folder = join(self.root, "manifest", name)
        paths = sorted(p for p in self.fs.ls(folder, detail=False) if p.endswith(".parquet") and "/.tmp-" not in p)
        tables = []
        for path in paths:
            with self.fs.open(path, "rb") as handle:
                tables.append(pq.read_table(handle, columns=columns))
        return pa.concat_tables(tables, promote_options="permissive")

    def write_json(self, relative: str, data: dict) -> None:
        write_atomic(self.fs, join(self.root, relative), json.dumps(data, indent=1, default=str).encode())

    def read_json(self, relative: str) -> dict:
        with self.fs.open(join(self.root, relative), "r") as handle:
            return json.load(handle)

    def exists(self, relative: str) -> bool:
        return self.fs.exists(join(self.root, relative))


def split_at(table: pa.Table, bounds: list[int]) -> list[pa.Table]:
    """``table``'s rows ``bounds[k]:bounds[k + 1]`` for each k."""
    return [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:])]


def error_counts(tables: list[pa.Table], by: str = "cause") -> dict[str, int]:
    """Error rows of ``tables`` counted by ``"stage: cause"`` (the cause without its detail in parentheses) or
    by kind, most frequent first. Reads the error columns, never the message."""
    counts: dict[str, int] = defaultdict(int)
    for table in tables:
        if table.num_rows == 0 or "error_cause" not in table.column_names:
            continue
        bad = table.filter(pc.fill_null(pc.equal(table.column("status"), ERROR), False))
        for stage, kind, cause in zip(bad.column("error_stage").to_pylist(), bad.column("error_kind").to_pylist(),
                                      bad.column("error_cause").to_pylist()):
            key = (kind or "unknown") if by == "kind" else f"{stage}: {(cause or '').split(' (')[0]}"
            counts[key] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

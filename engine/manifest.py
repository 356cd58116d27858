"""Manifests.

Executors hand every finished batch back to the run (``engine.run``); ``compact`` turns the run's rows into
``manifest/videos`` and ``manifest/clips``: one row per key, sorted, timing and bookkeeping columns (``_*``)
left out, so the manifest depends on the inputs and the pipeline only, never on how the run went (a killed
run, rerun, gives the bytes of an uninterrupted one). Resume lives in the stages' stored results
(``engine.results``), not here.
"""

from __future__ import annotations

import io
import json
import logging
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.io import join, output_fs, write_atomic
from engine.stage import CLIPS_IN_VIDEO, ERROR, ERROR_COLUMNS, RAN_PREFIX, TIMING_PREFIX, conform

log = logging.getLogger(__name__)

ROWS_PER_FILE = 500_000


def _key(video_id: str, clip_id: str | None) -> str:
    return clip_id if clip_id is not None else f"{video_id}:video"


class Manifest:
    def __init__(self, output: str):
        self.output = output.rstrip("/")
        self.fs, self.root = output_fs(output)

    # -- final manifest ---------------------------------------------------------------------------------
    def compact(self, table: pa.Table, schema: dict[str, pa.DataType], video_columns: list[str],
                video_stages: tuple[str, ...] = (), write: bool = True
                ) -> tuple[pa.Table, pa.Table, dict[str, float], dict[str, int]]:
        """manifest/videos and manifest/clips from the run's rows (written unless ``write`` is False); returns
        them, the seconds per stage and the rows each stage computed in this run. Columns come in ``schema``'s
        order with its types, whatever order the run's batches had. ``video_stages`` ran before the splitter:
        their numbers are counted once per video, not once per clip."""
        schema = {**schema, "clip_id": schema.get("clip_id", pa.string())}
        table = conform(table, schema)
        table = table.select([*schema, *sorted(c for c in table.column_names if c not in schema)])
        table = table.cast(pa.schema([pa.field(f.name, schema.get(f.name, f.type)) for f in table.schema]))
        keys = [_key(v, c) for v, c in zip(table.column("video_id").to_pylist(), table.column("clip_id").to_pylist())]
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        table = table.take(sorted(first.values()))

        timing_cols = [c for c in table.column_names if c.startswith("_")]
        clip_rows = table.filter(pc.is_valid(table.column("clip_id")))
        video_rows = self._video_rows(table, [c for c in video_columns if c in table.column_names])
        timings: dict[str, float] = {}
        computed: dict[str, int] = {}
        one_per_video = table.take(sorted({v: i for i, v in enumerate(table.column("video_id").to_pylist())}.values()))
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

    def add_clip_columns(self, clips: pa.Table, added: pa.Table) -> pa.Table:
        """Join ``added`` (keyed by clip_id) into the clips manifest and rewrite it."""
        new = [c for c in added.column_names if c != "clip_id"]
        clips = clips.drop_columns([c for c in new if c in clips.column_names])
        # A positional take instead of Table.join: Arrow's hash join rejects list columns (scene_cuts, ...).
        position = {cid: i for i, cid in enumerate(added.column("clip_id").to_pylist())}
        take = pa.array([position.get(cid) for cid in clips.column("clip_id").to_pylist()], pa.int64())
        for name in new:
            clips = clips.append_column(name, added.column(name).take(take))
        clips = clips.sort_by([("video_id", "ascending"), ("start_frame", "ascending")])
        self.write_table("clips", clips)
        return clips

    def write_clips(self, clips: pa.Table) -> None:
        self.write_table("clips", clips)

    def _video_rows(self, table: pa.Table, video_columns: list[str]) -> pa.Table:
        """One row per video: its metadata, its status (error if it produced an error before splitting) and
        its clip count."""
        columns = list(dict.fromkeys([*video_columns, CLIPS_IN_VIDEO] if CLIPS_IN_VIDEO in table.column_names
                                     else video_columns))
        ids = table.column("video_id").to_pylist()
        clip_ids = table.column("clip_id").to_pylist() if "clip_id" in table.column_names else [None] * len(ids)
        chosen: dict[str, int] = {}
        for i, (vid, cid) in enumerate(zip(ids, clip_ids)):
            if vid not in chosen or (cid is None and clip_ids[chosen[vid]] is not None):
                chosen[vid] = i  # prefer the clip-less row: it carries the video's own error, if any
        rows = table.take(sorted(chosen.values())).select(columns)
        # A clip-level error (a scorer failing on one clip) is not the video's error.
        has_clips = pc.is_valid(table.take(sorted(chosen.values())).column("clip_id")) if "clip_id" in \
            table.column_names else pa.array([False] * rows.num_rows)
        for name in ERROR_COLUMNS:
            if name in rows.column_names:
                value = pa.scalar("ok" if name == "status" else None, pa.string())
                rows = rows.set_column(rows.schema.get_field_index(name), name,
                                       pc.if_else(has_clips, value, rows.column(name)))
        return rows

    def write_table(self, name: str, table: pa.Table) -> None:
        """``table`` as ``manifest/<name>/part-NNNNN.parquet`` (atomic writes; stale parts removed)."""
        folder = join(self.root, "manifest", name)
        old = [p for p in self.fs.ls(folder, detail=False)] if self.fs.exists(folder) else []
        written = []
        for index, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_FILE)):
            buffer = io.BytesIO()
            # one chunk per column: Parquet's pages follow Arrow's chunks, which follow how the run was batched
            pq.write_table(table.slice(start, ROWS_PER_FILE).combine_chunks(), buffer, compression="zstd")
            path = join(folder, f"part-{index:05d}.parquet")
            write_atomic(self.fs, path, buffer.getvalue())
            written.append(path)
        for path in old:
            if path not in written and path.endswith(".parquet"):
                self.fs.rm(path)

    # -- reading ----------------------------------------------------------------------------------------
    def read(self, name: str) -> pa.Table:
        folder = join(self.root, "manifest", name)
        paths = sorted(p for p in self.fs.ls(folder, detail=False) if p.endswith(".parquet") and "/.tmp-" not in p)
        tables = []
        for path in paths:
            with self.fs.open(path, "rb") as handle:
                tables.append(pq.read_table(handle))
        return pa.concat_tables(tables, promote_options="permissive")

    def write_json(self, relative: str, data: dict) -> None:
        write_atomic(self.fs, join(self.root, relative), json.dumps(data, indent=1, default=str).encode())

    def read_json(self, relative: str) -> dict:
        with self.fs.open(join(self.root, relative), "r") as handle:
            return json.load(handle)

    def exists(self, relative: str) -> bool:
        return self.fs.exists(join(self.root, relative))


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

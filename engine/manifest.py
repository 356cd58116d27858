"""Manifests and resume.

Executors hand every finished batch to ``Manifest.write_part``, which writes it as a Parquet part under
``<out>/_state/parts/`` (temporary name, then rename; the name is a hash of the rows' keys, so a retried
batch overwrites itself). Every row carries ``clips_in_video``, so a video is complete exactly when all
its clips (or its one clip-less row) are in some part: ``completed_videos`` is what a rerun skips.
``compact`` then writes ``manifest/videos`` and ``manifest/clips``: rows of complete videos only, one per
key, sorted — so a killed run, rerun, ends with exactly the manifest of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.io import join, output_fs, write_atomic
from engine.stage import CLIPS_IN_VIDEO, ERROR, ERROR_COLUMNS, TIMING_PREFIX

log = logging.getLogger(__name__)

PARTS = "_state/parts"
ROWS_PER_FILE = 500_000


def _key(video_id: str, clip_id: str | None) -> str:
    return clip_id if clip_id is not None else f"{video_id}:video"


class Manifest:
    def __init__(self, output: str, parts: str = PARTS):
        self.output = output.rstrip("/")
        self.fs, self.root = output_fs(output)
        self.parts = parts  # where this manifest's parts live (stages after a barrier keep their own)

    # -- parts ---------------------------------------------------------------------------------------------
    def write_part(self, table: pa.Table) -> str:
        if table.num_rows == 0:
            return ""
        clip_ids = table.column("clip_id").to_pylist() if "clip_id" in table.column_names else [None] * table.num_rows
        keys = sorted(_key(v, c) for v, c in zip(table.column("video_id").to_pylist(), clip_ids))
        name = hashlib.sha1("\n".join(keys).encode()).hexdigest()[:20]
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        path = join(self.root, self.parts, f"{name}.parquet")
        write_atomic(self.fs, path, buffer.getvalue())
        return path

    def part_paths(self) -> list[str]:
        folder = join(self.root, self.parts)
        if not self.fs.exists(folder):
            return []
        return sorted(p for p in self.fs.ls(folder, detail=False) if p.endswith(".parquet") and "/.tmp-" not in p)

    def _read_parts(self, columns: list[str] | None = None) -> pa.Table | None:
        tables = []
        for path in self.part_paths():
            with self.fs.open(path, "rb") as handle:
                table = pq.read_table(handle, columns=columns)
            tables.append(table)
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="permissive")

    def completed_videos(self) -> set[str]:
        """Videos whose every clip is already in a part: a rerun skips them."""
        table = self._read_parts()
        if table is None:
            return set()
        if CLIPS_IN_VIDEO not in table.column_names:
            return set()
        seen: dict[str, set[str]] = defaultdict(set)
        expected: dict[str, int] = {}
        for vid, cid, n in zip(table.column("video_id").to_pylist(), table.column("clip_id").to_pylist(),
                               table.column(CLIPS_IN_VIDEO).to_pylist()):
            if n is None:  # failed before the splitter: the error row is the whole video
                expected[vid] = 0
                continue
            expected[vid] = n
            if cid is not None:
                seen[vid].add(cid)
        return {vid for vid, n in expected.items() if len(seen[vid]) >= n}

    # -- final manifest ---------------------------------------------------------------------------------
    def compact(self, video_columns: list[str], video_stages: tuple[str, ...] = (), write: bool = True
                ) -> tuple[pa.Table, pa.Table, dict[str, float]]:
        """Write manifest/videos and manifest/clips from the parts (unless ``write`` is false); return them and
        the stage timings. ``video_stages`` ran before the splitter: their seconds are counted once per video,
        not per clip."""
        table = self._read_parts()
        if table is None:
            raise RuntimeError(f"no results under {self.output}/{self.parts}: nothing was processed")
        complete = self.completed_videos()
        table = table.filter(pa.array([v in complete for v in table.column("video_id").to_pylist()]))
        keys = [_key(v, c) for v, c in zip(table.column("video_id").to_pylist(), table.column("clip_id").to_pylist())]
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        table = table.take(sorted(first.values()))

        timing_cols = [c for c in table.column_names if c.startswith(TIMING_PREFIX)]
        clip_rows = table.filter(pc.is_valid(table.column("clip_id")))
        video_rows = self._video_rows(table, [c for c in video_columns if c in table.column_names])
        timings = {}
        one_per_video = table.take(sorted({v: i for i, v in enumerate(table.column("video_id").to_pylist())}.values()))
        for col in timing_cols:
            stage = col[len(TIMING_PREFIX):]
            # a video-level stage's time per video was copied onto each of its clip rows by the splitter
            source = one_per_video if stage in video_stages else table
            timings[stage] = float(pc.sum(pc.fill_null(source.column(col), 0.0)).as_py() or 0.0)
        clips = clip_rows.drop_columns(timing_cols).sort_by([("video_id", "ascending"), ("start_frame", "ascending")])
        videos = video_rows.drop_columns([c for c in timing_cols if c in video_rows.column_names])
        videos = videos.sort_by([("video_id", "ascending")])
        if write:
            self.write_table("videos", videos)
            self.write_table("clips", clips)
        return videos, clips, timings

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
        pre_split_timing = [c for c in table.column_names if c.startswith(TIMING_PREFIX) and c in video_columns]
        columns = list(dict.fromkeys([*video_columns, *pre_split_timing, CLIPS_IN_VIDEO] if CLIPS_IN_VIDEO in
                                     table.column_names else [*video_columns, *pre_split_timing]))
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
            pq.write_table(table.slice(start, ROWS_PER_FILE), buffer, compression="zstd")
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

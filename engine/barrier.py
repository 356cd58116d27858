"""Barrier stages: a driver-side step between per-video stages that needs every clip at once.

A pipeline ``a, b, [barrier], c, d`` runs as: ``a, b`` for every video (parts under ``_state/parts``, as
without a barrier), the barrier's ``finalize`` on the driver over the compacted clips (its columns, e.g.
``keep`` and ``drop_reason`` from dedup, join every clip row), then ``c, d`` over those clip rows with parts of
their own (``_state/parts-after-<i>-<name>``). So a stage after the barrier sees its decisions: the caption
stage skips clips dedup dropped, exactly as it skips clips a filter dropped.

Resume works per segment: a rerun skips videos complete in a segment's parts; the barrier runs again over
the full clip set (it must be deterministic). Its fresh columns replace the stored ones on every row, and a
clip it now drops (say a new video holds a better copy) loses what stages after it computed only for kept
clips (``skips_dropped``), so the manifest equals that of one uninterrupted run over all inputs.
"""

from __future__ import annotations

import logging
import time

import pyarrow as pa
import pyarrow.compute as pc

from engine.manifest import PARTS, Manifest
from engine.pipeline import Pipeline
from engine.stage import ERROR_COLUMNS, RunContext

log = logging.getLogger(__name__)


def run_segments(pipeline: Pipeline, todo: pa.Table, ctx: RunContext, executor, manifest: Manifest,
                 video_stages: tuple[str, ...] = ()) -> tuple[pa.Table, pa.Table, dict[str, float]]:
    """Execute ``pipeline`` on ``todo`` videos, stopping at each barrier; return (videos, clips, stage seconds)."""
    stages = pipeline.stages
    barriers = [i for i, stage in enumerate(stages) if stage.barrier]
    bounds = [*barriers, len(stages)]
    if todo.num_rows:
        executor.run(pipeline.segment(0, bounds[0]), todo, ctx, manifest.write_part)
    videos, clips, seconds = manifest.compact(pipeline.video_columns(), video_stages)
    for k, index in enumerate(barriers):
        barrier = stages[index]
        begun = time.perf_counter()
        added = barrier.finalize(ctx, clips)
        seconds[f"{barrier.name} (barrier)"] = time.perf_counter() - begun
        if added is not None and added.num_rows:
            clips = manifest.add_clip_columns(clips, added)
        after = pipeline.segment(index + 1, bounds[k + 1])
        if not after.stages or not clips.num_rows:
            continue
        segment = Manifest(ctx.output, parts=f"{PARTS}-after-{index}-{barrier.name}")
        done = segment.completed_videos()
        rows = clips.filter(pa.array([v not in done for v in clips.column("video_id").to_pylist()], pa.bool_()))
        log.info("after %s: %d of %d clips to process", barrier.name, rows.num_rows, clips.num_rows)
        if rows.num_rows:
            executor.run(after, rows, ctx, segment.write_part)
        _, later, later_seconds = segment.compact(pipeline.video_columns(), write=False)
        for name, value in later_seconds.items():
            seconds[name] = seconds.get(name, 0.0) + value
        decided = [c for c in (added.column_names if added is not None else []) if c != "clip_id"]
        clips = refresh(later, clips, decided, after)
    if barriers:
        manifest.write_clips(clips)
    return videos, clips, seconds


def refresh(later: pa.Table, decided: pa.Table, columns: list[str], after: Pipeline) -> pa.Table:
    """``later`` (rows from the stages after a barrier, possibly from an earlier run) with the barrier's
    current ``columns`` from ``decided``, and the columns that skips-dropped stages after it add cleared on
    rows it drops."""
    position = {cid: i for i, cid in enumerate(decided.column("clip_id").to_pylist())}
    take = pa.array([position.get(cid) for cid in later.column("clip_id").to_pylist()], pa.int64())
    for name in columns:
        column = decided.column(name).take(take)
        if name in later.column_names:
            later = later.set_column(later.schema.get_field_index(name), name, column)
        else:
            later = later.append_column(name, column)
    if "keep" not in later.column_names:
        return later
    dropped = pc.invert(pc.fill_null(later.column("keep"), True))
    for name in ERROR_COLUMNS:  # a failure in a stage that would now skip the clip is not its failure
        if name not in later.column_names or name not in decided.column_names:
            continue
        index = later.schema.get_field_index(name)
        later = later.set_column(index, name, pc.if_else(dropped, decided.column(name).take(take), later.column(name)))
    schema = after.schema_after(len(after.stages) - 1)
    for stage in after.stages:
        if not stage.skips_dropped:
            continue
        for name in stage.adds:
            if name in later.column_names and name not in columns:
                index = later.schema.get_field_index(name)
                nulls = pa.nulls(later.num_rows, schema.get(name, later.schema.field(name).type))
                later = later.set_column(index, name, pc.if_else(dropped, nulls, later.column(name)))
    return later.sort_by([("video_id", "ascending"), ("start_frame", "ascending")])

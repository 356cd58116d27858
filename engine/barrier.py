"""Barrier stages: a driver-side step between per-video stages that needs every clip at once.

A pipeline ``a, b, [barrier], c, d`` runs as: ``a, b`` for every video, the barrier's ``finalize`` on the
driver over all clips (its columns, e.g. ``keep`` and ``drop_reason`` from dedup, join every clip row), then
``c, d`` over those rows. So a stage after the barrier sees its decisions: the caption stage skips clips dedup
dropped, exactly as it skips clips a filter dropped. The barrier runs again on every run (it must be
deterministic); the stages around it reuse their stored results row by row (engine.results), so a clip the
barrier now drops gets none of the skips-dropped work and one it now keeps gets it done.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from engine.pipeline import Pipeline
from engine.stage import RunContext

log = logging.getLogger(__name__)


def run_segments(pipeline: Pipeline, first: Callable[[Pipeline, RunContext], pa.Table], ctx: RunContext, executor,
                 compact: Callable[[pa.Table, int], pa.Table],
                 before_barrier: Callable[[pa.Table], None] | None = None) -> tuple[pa.Table, dict[str, float]]:
    """Every stage over every video, stopping at each barrier. ``first(segment, ctx)`` runs the stages before
    the first barrier and returns all rows; ``compact(rows, index)`` gives the clips after stage ``index``;
    ``before_barrier`` sees the rows as the first barrier gets them. Returns the rows after the last stage and
    the barriers' seconds."""
    stages = pipeline.stages
    barriers = [i for i, stage in enumerate(stages) if stage.barrier]
    bounds = [*barriers, len(stages)]
    table = first(pipeline.segment(0, bounds[0]), _part(ctx, 0, bounds[0]))
    seconds: dict[str, float] = {}
    for k, index in enumerate(barriers):
        barrier = stages[index]
        if k == 0 and before_barrier is not None:
            before_barrier(table)
        begun = time.perf_counter()
        added = barrier.finalize(ctx, compact(table, index - 1))
        seconds[f"{barrier.name} (barrier)"] = time.perf_counter() - begun
        if added is not None and added.num_rows:
            table = join_clip_columns(table, added)
        after = pipeline.segment(index + 1, bounds[k + 1])
        if after.stages:
            rows: list[pa.Table] = []
            executor.run(after, table, _part(ctx, index + 1, bounds[k + 1]), rows.append)
            table = pa.concat_tables(rows, promote_options="permissive") if rows else table
    return table, seconds


def _part(ctx: RunContext, start: int, stop: int) -> RunContext:
    """``ctx`` for a segment: its stages' fingerprints, indexed from the segment's first stage."""
    return dataclasses.replace(ctx, fingerprints=ctx.fingerprints[start:stop]) if ctx.fingerprints else ctx


def join_clip_columns(rows: pa.Table, added: pa.Table) -> pa.Table:
    """``added``'s columns (keyed by clip_id) set on every row that has a clip; rows without keep theirs."""
    position = {cid: i for i, cid in enumerate(added.column("clip_id").to_pylist())}
    take = pa.array([position.get(cid) for cid in rows.column("clip_id").to_pylist()], pa.int64())
    for name in added.column_names:
        if name == "clip_id":
            continue
        column = added.column(name).take(take)
        if name in rows.column_names:
            old = rows.column(name)
            column = pc.if_else(pc.is_null(take), old.cast(column.type), column)
            rows = rows.set_column(rows.schema.get_field_index(name), name, column)
        else:
            rows = rows.append_column(name, column)
    return rows

"""Run a pipeline in this process: for tests, debugging and small jobs."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from engine.pipeline import Pipeline
from engine.stage import RunContext, run_stage

log = logging.getLogger(__name__)


class LocalExecutor:
    name = "local"

    def __init__(self, videos_per_part: int = 8, progress: bool = True):
        self.videos_per_part = videos_per_part  # videos carried through all stages before a part is written
        self.progress = progress

    def run(self, pipeline: Pipeline, videos: pa.Table, ctx: RunContext, sink: Callable[[pa.Table], str]) -> None:
        for stage in pipeline.stages:
            stage.setup(ctx)
        schemas = [pipeline.schema_after(i) for i in range(len(pipeline.stages))]
        with Progress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), disable=not self.progress, transient=False) as progress:
            bars = [progress.add_task(stage.name, total=None) for stage in pipeline.stages]
            parts = _by_video(videos, self.videos_per_part)
            total = progress.add_task("videos", total=len(parts))
            for table in parts:
                for stage, schema, bar in zip(pipeline.stages, schemas, bars):
                    pieces = [
                        run_stage(stage, table.slice(i, stage.batch_size), ctx, schema)
                        for i in range(0, table.num_rows, max(1, stage.batch_size))
                    ]
                    table = pa.concat_tables(pieces, promote_options="permissive") if pieces else table
                    progress.advance(bar, table.num_rows)
                sink(table)
                progress.advance(total)


def _by_video(rows: pa.Table, per_part: int) -> list[pa.Table]:
    """Slices of ``per_part`` videos each; a video's rows stay together (after a barrier, rows are clips)."""
    ids = rows.column("video_id").to_pylist()
    starts = [i for i in range(len(ids)) if i == 0 or ids[i] != ids[i - 1]] + [len(ids)]
    step = max(1, per_part)
    return [rows.slice(starts[k], starts[min(k + step, len(starts) - 1)] - starts[k])
            for k in range(0, len(starts) - 1, step)]

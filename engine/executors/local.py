"""Run a pipeline in this process: for tests, debugging and small jobs."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from engine.pipeline import Pipeline
from engine.stage import RunContext, run_stage, teardown_if_set_up

log = logging.getLogger(__name__)


class LocalExecutor:
    name = "local"

    def __init__(self, videos_per_part: int = 8, progress: bool = True):
        self.videos_per_part = videos_per_part  # videos carried through all stages before they are handed on
        self.progress = progress

    def run(self, pipeline: Pipeline, videos: pa.Table, ctx: RunContext, sink: Callable[[pa.Table], None]) -> None:
        """Every stage over ``videos``, ``videos_per_part`` at a time; each finished table goes to ``sink``.
        Stages are set up on first use (engine.stage.run_stage) and torn down at the end, even after an error."""
        schemas = [pipeline.schema_after(i) for i in range(len(pipeline.stages))]
        try:
            with Progress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), disable=not self.progress, transient=False) as progress:
                bars = [progress.add_task(stage.name, total=None) for stage in pipeline.stages]
                total = progress.add_task("videos", total=videos.num_rows)
                for start in range(0, videos.num_rows, self.videos_per_part):
                    table = videos.slice(start, self.videos_per_part)
                    for index, (stage, schema, bar) in enumerate(zip(pipeline.stages, schemas, bars)):
                        pieces = [
                            run_stage(stage, table.slice(i, stage.batch_size), ctx, schema, index)
                            for i in range(0, table.num_rows, max(1, stage.batch_size))
                        ]
                        table = pa.concat_tables(pieces, promote_options="permissive") if pieces else table
                        progress.advance(bar, table.num_rows)
                    sink(table)
                    progress.advance(total, min(self.videos_per_part, videos.num_rows - start))
        finally:
            for stage in pipeline.stages:
                teardown_if_set_up(stage, ctx)

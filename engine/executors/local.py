"""Run a pipeline in this process: for tests, debugging and small jobs."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from engine.metrics import RunMeter, metered
from engine.pipeline import Pipeline
from engine.results import buffer_stores, flush_stores
from engine.stage import RunContext, Stage, teardown_if_set_up

log = logging.getLogger(__name__)


class LocalExecutor:
    name = "local"

    def __init__(self, videos_per_part: int = 8, progress: bool = True):
        self.videos_per_part = videos_per_part  # videos carried through all stages before they are handed on
        self.progress = progress
        self.metrics = RunMeter()  # what each stage did (engine.metrics); the run clears it when it starts

    def run(self, pipeline: Pipeline, videos: pa.Table, ctx: RunContext, sink: Callable[[pa.Table], None]) -> None:
        """Every stage over ``videos``, ``videos_per_part`` at a time; each finished table goes to ``sink``.
        Stages are set up on first use (engine.stage.run_stage) and torn down at the end, even after an error."""
        schemas = [pipeline.schema_after(i) for i in range(len(pipeline.stages))]
        # Every bar counts videos, whose number is known up front (clips are not known before the split);
        # the rows a stage has output so far (clips after the splitter) are shown beside it.
        n_videos = len(pc.unique(videos.column("video_id")))
        self.metrics.expect([stage.name for stage in pipeline.stages])
        buffer_stores(ctx.run_id)  # a work unit's many batches go out as one part per stage
        try:
            with Progress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("videos · {task.fields[rows]} rows"), TimeElapsedColumn(),
                          disable=not self.progress, transient=False) as progress:
                bars = [progress.add_task(stage.name, total=n_videos, rows=0) for stage in pipeline.stages]
                for table in _by_video(videos, self.videos_per_part):
                    done = len(pc.unique(table.column("video_id")))
                    for index, (stage, schema, bar) in enumerate(zip(pipeline.stages, schemas, bars)):
                        pieces = [self._call(stage, table, i, ctx, schema, index)
                                  for i in range(0, table.num_rows, max(1, stage.batch_size))]
                        table = pa.concat_tables(pieces, promote_options="permissive") if pieces else table
                        rows = progress.tasks[bar].fields["rows"] + table.num_rows
                        progress.update(bar, advance=done, rows=rows)
                    sink(table.combine_chunks())  # one chunk per column, however small the batches were
                    flush_stores(ctx.run_id)  # a work unit's results as one part per stage: a kill keeps them
        finally:
            for stage in pipeline.stages:
                teardown_if_set_up(stage, ctx)
            try:
                flush_stores(ctx.run_id)
            except Exception as exc:  # noqa: BLE001 - an error of the run itself is the one to report
                log.warning("stored results not all written (%s): a rerun computes those rows again", exc)

    def _call(self, stage: Stage, table: pa.Table, offset: int, ctx: RunContext, schema: dict, index: int) -> pa.Table:
        """The batch of ``table`` at ``offset``, metered; what waits at the stage's input is the rest of the part."""
        self.metrics.queue(stage.name, table.num_rows - offset, "rows")
        out, span = metered(stage, table.slice(offset, stage.batch_size), ctx, schema, index)
        self.metrics.add(span)
        return out


def _by_video(rows: pa.Table, per_part: int) -> list[pa.Table]:
    """Slices of ``per_part`` videos each; a video's rows stay together (after a barrier, rows are clips)."""
    ids = rows.column("video_id")
    changes = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)) if len(ids) > 1 else pa.array([], pa.bool_())
    starts = [0, *(pc.indices_nonzero(pc.fill_null(changes, True)).to_numpy() + 1).tolist(), len(ids)] \
        if len(ids) else [0]
    step = max(1, per_part)
    return [rows.slice(starts[k], starts[min(k + step, len(starts) - 1)] - starts[k])
            for k in range(0, len(starts) - 1, step)]

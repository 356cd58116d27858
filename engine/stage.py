"""The stage contract: small dataclasses that turn one Arrow table into another.

A stage never imports Ray. ``engine.executors`` maps stages onto Ray Data (or runs them in-process), and
``run_stage`` below is the one place that wraps a stage call for both: it hides rows that already failed,
turns a crash on bad input into error rows (``error_fields`` writes the error columns), stops the work unit
with ``EnvironmentFault`` when the machine rather than the input failed, conforms the output to the declared
column types and records how long the stage took.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

OK = "ok"
ERROR = "error"

# Columns every row carries from ingest on. Video metadata added by ``probe`` and clip columns added by
# ``split`` are declared by those stages.
BASE_COLUMNS: dict[str, pa.DataType] = {
    "uri": pa.string(),
    "video_id": pa.string(),
    "bytes": pa.int64(),
    "status": pa.string(),
    "error": pa.string(),  # human text, made from the three columns below by ``error_fields``
    "error_stage": pa.string(),  # the stage that failed on the row ("ingest" before the first stage)
    "error_kind": pa.string(),  # INPUT_FAULT or UNEXPECTED
    "error_cause": pa.string(),  # why, without the stage or the file
}
ERROR_COLUMNS = ("status", "error", "error_stage", "error_kind", "error_cause")
INPUT_FAULT = "input"  # the video or clip itself is the problem: the same input fails the same way again
UNEXPECTED = "unexpected"  # any other exception recorded under on_error=record (likely a bug): a rerun retries it
# Errors of the machine, not of the video: they stop the work unit instead of becoming error rows.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENOMEM, errno.EMFILE, errno.ENFILE})
# Written by the fan-out stage on every row: how many clips its video produced (0 for videos without any).
# The manifest writer uses it to know when a video is complete, which is what makes resume exact.
CLIPS_IN_VIDEO = "clips_in_video"
TIMING_PREFIX = "_sec_"
RAN_PREFIX = "_ran_"  # 1 on rows the stage computed in this run, 0 on rows completed from stored results
# 1 on rows the stage processed (computed or completed from stored results), 0 on rows it skipped: what the next
# run's plan will find stored, counted per partition into the completion index (engine.completion)
SEEN_PREFIX = "_seen_"
TOKENS_PREFIX = "_tokens_"  # tokens a generating stage produced per row (with_tokens); summed by engine.metrics


@dataclass(kw_only=True, slots=True)
class Resources:
    """What one worker of a stage needs. Ray schedules on it; the local executor ignores it."""

    cpus: float = 1.0  # logical CPUs per worker (fractions allowed)
    gpus: float = 0.0  # GPUs per worker; fractional GPUs pack several workers on one device
    memory_gb: float = 0.0  # heap memory reserved per worker, 0 = no reservation


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model a stage will load: checked before any video is opened."""

    field: str  # the stage field that names it, for error messages
    name: str  # hub id or local directory
    kind: str  # "transformers" | "diffusers" | "open_clip" | "file"
    source: str = ""  # where to get it, when that is not the hub (said in the message when it is missing)


@dataclass(kw_only=True, slots=True)
class RunContext:
    """What a stage may know about the run it is part of."""

    output: str  # output root (local path or fsspec URL)
    on_error: str = "record"  # "record": bad input becomes error rows; "raise": re-raise (tests)
    worker_index: int = 0
    run_id: str = ""  # unique per run: stored results loaded by a worker belong to one run
    fingerprints: tuple[str, ...] = ()  # per stage index (engine.results); empty = no stored results
    fresh: frozenset[str] = frozenset()  # stages told to recompute (--force / --from): no reuse of their files


class StageError(Exception):
    """Raised by stages for a problem with one input (a video that cannot be decoded, ...).

    The message must name the cause; ``run_stage`` prefixes the stage name and the file.
    """


class EnvironmentFault(Exception):
    """The machine failed, not the input: output storage full, read-only or not writable, out of memory.

    Raised by ``run_stage`` instead of writing error rows, so the work unit is never recorded as done and a
    rerun (after the storage is fixed) redoes it.
    """

    def __init__(self, stage: str, cause: str):
        self.stage, self.cause = stage, cause
        super().__init__(f"{stage}: {cause}")


@dataclass(kw_only=True)
class Stage:
    """Base of every stage. Subclasses are ``@dataclass(kw_only=True)``; their fields are the pipeline
    file's keys for that stage."""

    name: ClassVar[str] = ""
    reads: ClassVar[tuple[str, ...]] = ()  # columns that must exist before this stage
    # columns used when present: a stage that writes one must come before this stage
    reads_optional: ClassVar[tuple[str, ...]] = ()
    adds: ClassVar[dict[str, pa.DataType]] = {}  # columns this stage writes, with their types
    fan_out: ClassVar[bool] = False  # one input row becomes zero or more output rows (the splitter)
    skips_dropped: ClassVar[bool] = False  # rows with keep == False pass through untouched (costly stages)
    # A barrier's finalize runs on the driver once every video has passed the stages before it, and its
    # columns join the clips before the stages after it run (engine/barrier.py), e.g. dedup before caption.
    barrier: ClassVar[bool] = False
    generates_tokens: ClassVar[bool] = False  # a text generator: it reports tokens per row (with_tokens)

    resources: Resources = field(default_factory=Resources)  # per-worker resources for the Ray executor
    batch_size: int = 8  # rows per process_batch call
    workers: int = 0  # actor-pool size under Ray; 0 = as many as the cluster's resources allow

    def setup(self, ctx: RunContext) -> None:
        """Load models and open clients; called once per worker before the first batch."""

    def process_batch(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError

    def teardown(self) -> None:
        """Stop threads and close writers and clients that setup() started; called once per worker at the end."""

    def models(self) -> list[ModelRef]:
        """Models this stage will load, so a run can check them all before it starts."""
        return []

    def check(self) -> list[str]:
        """Problems with field values beyond their types (ranges, combinations). Each says what to change."""
        return []

    def finalize(self, ctx: RunContext, clips: pa.Table) -> pa.Table | None:
        """Run once on the driver after every video is done, with the whole clips manifest (e.g. to pack
        shards). May return a table keyed by ``clip_id`` whose other columns are joined into the clips
        manifest. Must be idempotent: a rerun calls it again."""
        return None

    @property
    def finalizes(self) -> bool:
        return type(self).finalize is not Stage.finalize

    @property
    def stateful(self) -> bool:
        """Stages with a setup() or GPUs run as Ray actor pools; the others as tasks."""
        return type(self).setup is not Stage.setup or self.resources.gpus > 0

    def config(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return value


# ---------------------------------------------------------------------------------------------------------
# Schema helpers shared by every executor


def conform(table: pa.Table, schema: dict[str, pa.DataType]) -> pa.Table:
    """Give ``table`` exactly the declared types for the columns in ``schema`` (adding missing ones as
    nulls), keeping its other columns. Parquet parts written by different workers then share one schema."""
    columns, names = [], []
    for name in table.column_names:
        col = table.column(name)
        if name in schema and col.type != schema[name]:
            col = col.cast(schema[name]) if col.null_count < len(col) else pa.nulls(len(col), schema[name])
        columns.append(col)
        names.append(name)
    for name, dtype in schema.items():
        if name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, dtype))
            names.append(name)
    return pa.Table.from_arrays(columns, names=names)


def error_text(stage: str, uri: str | None, cause: str, clip_id: str | None = None) -> str:
    """The human error message: ``stage: file: [clip ID: ]cause``. Made from the columns, never parsed back."""
    clip = f"clip {clip_id}: " if clip_id else ""
    return f"{stage}: {uri}: {clip}{cause}"


def error_fields(stage: str, uri: str | None, cause: str, kind: str = INPUT_FAULT,
                 clip_id: str | None = None) -> dict[str, str]:
    """The one place error columns are written: status, the structured columns and the text made from them."""
    return {"status": ERROR, "error": error_text(stage, uri, cause, clip_id), "error_stage": stage,
            "error_kind": kind, "error_cause": cause}


def mark_error(row: dict, stage: str, cause: str, kind: str = INPUT_FAULT) -> dict:
    """``row`` (a dict) as an error row of ``stage``."""
    return {**row, **error_fields(stage, row.get("uri"), cause, kind, row.get("clip_id"))}


def error_rows(rows: pa.Table, stage: str, cause: str, kind: str = INPUT_FAULT) -> pa.Table:
    """Mark every row of ``rows`` as failed in ``stage`` with ``cause``."""
    clip_ids = rows.column("clip_id").to_pylist() if "clip_id" in rows.column_names else [None] * rows.num_rows
    fields = [error_fields(stage, uri, cause, kind, cid) for uri, cid in zip(rows.column("uri").to_pylist(), clip_ids)]
    for name in ERROR_COLUMNS:
        column = pa.array([f[name] for f in fields], pa.string())
        if name in rows.column_names:
            rows = rows.set_column(rows.schema.get_field_index(name), name, column)
        else:
            rows = rows.append_column(name, column)
    return rows


def describe(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# Local output roots of the runs in this process: an OSError on a file under one of them is the output's fault.
_OUTPUT_ROOTS: set[str] = set()


def register_output(output: str) -> None:
    if "://" not in output or output.startswith("file://"):
        _OUTPUT_ROOTS.add(os.path.abspath(output.removeprefix("file://")).rstrip("/") + "/")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def environment_fault(exc: BaseException) -> str | None:
    """The cause if ``exc`` (or an exception it was raised from) is a fault of the machine rather than of the
    input: no space, read-only or quota on any disk, out of memory (host or CUDA), or any OS error on a
    file under the run's own output (not writable, not a directory, ...). None for input faults."""
    for e in _chain(exc):
        if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
            return describe(e)
        if isinstance(e, OSError):
            if e.errno in ENVIRONMENT_ERRNOS:
                return describe(e)
            names = [os.path.abspath(str(n)) for n in (e.filename, e.filename2) if n]
            if any((n + "/").startswith(root) for n in names for root in _OUTPUT_ROOTS):
                return describe(e)
    return None


def todo_mask(stage: Stage, batch: pa.Table) -> pa.Array:
    """Rows the stage processes: status ok; for stages after the split, rows with a clip; for costly stages,
    rows no filter dropped."""
    mask = pc.equal(batch.column("status"), OK)
    if not stage.fan_out and "clip_id" in batch.column_names:  # a video without clips has nothing to score
        mask = pc.and_(mask, pc.is_valid(batch.column("clip_id")))
    if stage.skips_dropped and "keep" in batch.column_names:
        mask = pc.and_(mask, pc.fill_null(batch.column("keep"), True))
    return pc.fill_null(mask, False)


def run_stage(stage: Stage, batch: pa.Table, ctx: RunContext, schema: dict[str, pa.DataType],
              index: int | None = None) -> pa.Table:
    """Run one stage on one batch the way every executor must.

    Rows whose status is already ``error`` (and, for costly stages, rows a filter dropped) skip the stage.
    With ``index`` (the stage's position) and ``ctx.fingerprints``, rows the stage computed before with the
    same inputs are completed from its stored results (engine.results) and the rest are computed and stored.
    The stage is set up on the first row it must compute, so a rerun that reuses everything loads no model.
    If the stage raises on the batch, each row is retried alone so one bad file cannot take its neighbours
    down; rows that still raise become error rows unless ``ctx.on_error == "raise"``. A fault of the machine
    raises ``EnvironmentFault`` and nothing of the batch is stored. ``schema`` is the full schema after this stage.
    """
    register_output(ctx.output)
    mask = todo_mask(stage, batch)
    todo, rest = batch.filter(mask), batch.filter(pc.invert(mask))
    store = None
    if index is not None and ctx.fingerprints:
        from engine.results import open_store

        store = open_store(ctx.output, ctx.run_id, stage, ctx.fingerprints[index], schema)
    reused, todo = store.split(todo) if store is not None else (todo.slice(0, 0), todo)
    start = time.perf_counter()
    if todo.num_rows:
        _ensure_setup(stage, ctx)
    out = _call(stage, todo, ctx, schema) if todo.num_rows else todo
    seconds = time.perf_counter() - start
    if stage.fan_out:
        out = _with_clip_counts(todo, out)
    out = conform(out, schema)
    if store is not None:
        store.write(out)
    per_row = seconds / out.num_rows if out.num_rows else 0.0
    pieces = [_add_timing(out, stage.name, per_row, 1, 1)]
    pieces += [_add_timing(conform(t, schema), stage.name, 0.0, 0, seen) for t, seen in ((reused, 1), (rest, 0))
               if t.num_rows]
    return pa.concat_tables(pieces, promote_options="permissive") if len(pieces) > 1 else pieces[0]


def _ensure_setup(stage: Stage, ctx: RunContext) -> None:
    if stage.__dict__.get("_setup_for_run") != (ctx.run_id, os.getpid()):
        stage.setup(ctx)
        stage.__dict__["_setup_for_run"] = (ctx.run_id, os.getpid())


def teardown_if_set_up(stage: Stage, ctx: RunContext) -> None:
    """Call ``stage.teardown()`` if this process set the stage up for this run."""
    if stage.__dict__.pop("_setup_for_run", None) == (ctx.run_id, os.getpid()):
        stage.teardown()


def _add_timing(table: pa.Table, stage: str, per_row: float, ran: int, seen: int) -> pa.Table:
    """Add this stage's seconds per row, whether it computed the row and whether it processed it; a stage used
    twice (two filters) adds to its own columns."""
    for name, value, dtype in ((TIMING_PREFIX + stage, per_row, pa.float64()), (RAN_PREFIX + stage, ran, pa.int32()),
                               (SEEN_PREFIX + stage, seen, pa.int8())):
        column = pa.array([value] * table.num_rows, dtype)
        if name in table.column_names:
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, pc.add(pc.fill_null(table.column(name), 0), column))
        else:
            table = table.append_column(name, column)
    return table


def with_tokens(table: pa.Table, stage: str, counts: list[int]) -> pa.Table:
    """``table`` with the tokens ``stage`` generated for each row: the run's tokens/s (engine.metrics) counts
    them; like the timing columns they never reach a manifest."""
    return table.append_column(TOKENS_PREFIX + stage, pa.array(counts, pa.int64()))


def map_rows(batch: pa.Table, stage: str, fn: Callable[[dict], dict | list[dict]], threads: int = 1) -> pa.Table:
    """Apply ``fn`` to each row (as a dict); it returns the output row, or a list of rows for a splitter.
    A ``StageError`` on one row turns that row into an error row and the others go on. ``threads`` > 1
    runs rows concurrently (for work that releases the GIL, such as FFmpeg encoding)."""

    def one(row: dict) -> list[dict]:
        try:
            result = fn(row)
        except StageError as exc:
            if environment_fault(exc):  # e.g. a disk filling up while a stage read: not this row's fault
                raise
            return [mark_error(row, stage, str(exc))]
        return result if isinstance(result, list) else [result]

    rows = batch.to_pylist()
    if threads > 1 and len(rows) > 1:
        with ThreadPoolExecutor(min(threads, len(rows))) as pool:
            results = list(pool.map(one, rows))
    else:
        results = [one(row) for row in rows]
    out = [r for result in results for r in result]
    if not out:
        return batch.slice(0, 0)
    # Every key of every row: an error row lacks the columns the stage adds, and from_pylist would take
    # the columns of the first row only.
    keys = list(dict.fromkeys(k for row in out for k in row))
    return pa.Table.from_pylist([{k: row.get(k) for k in keys} for row in out])


def _call(stage: Stage, todo: pa.Table, ctx: RunContext, schema: dict[str, pa.DataType]) -> pa.Table:
    try:
        return stage.process_batch(todo)
    except Exception as exc:  # noqa: BLE001 - isolate bad rows below; bugs re-raise under on_error=raise
        fault = environment_fault(exc)
        if fault:
            raise EnvironmentFault(stage.name, fault) from exc
        if ctx.on_error == "raise" and not isinstance(exc, StageError):
            raise
        if todo.num_rows == 1:
            kind = INPUT_FAULT if isinstance(exc, StageError) else UNEXPECTED
            cause = str(exc) if isinstance(exc, StageError) else describe(exc)
            log.warning("%s failed on %s: %s", stage.name, todo.column("uri")[0], cause)
            log.debug("%s", traceback.format_exc())
            return error_rows(todo, stage.name, cause, kind)
    pieces = [conform(_call(stage, todo.slice(i, 1), ctx, schema), schema) for i in range(todo.num_rows)]
    return pa.concat_tables(pieces, promote_options="permissive")


def _with_clip_counts(inputs: pa.Table, out: pa.Table) -> pa.Table:
    """Count clips per video and keep one clip-less row for every input video that produced no clip, so
    every video reaches the manifest (as an error or as 'no clips') and its completeness can be checked."""
    ids = out.column("video_id").to_pylist() if out.num_rows else []
    has_clip = [cid is not None for cid in out.column("clip_id").to_pylist()] if out.num_rows else []
    counts: dict[str, int] = {}
    for vid, clip in zip(ids, has_clip):
        counts[vid] = counts.get(vid, 0) + int(clip)
    missing = [i for i, vid in enumerate(inputs.column("video_id").to_pylist()) if vid not in counts]
    if missing:
        out = pa.concat_tables([out, inputs.take(missing)], promote_options="default")
        ids = out.column("video_id").to_pylist()
    column = pa.array([counts.get(vid, 0) for vid in ids], pa.int32())
    if CLIPS_IN_VIDEO in out.column_names:
        return out.set_column(out.schema.get_field_index(CLIPS_IN_VIDEO), CLIPS_IN_VIDEO, column)
    return out.append_column(CLIPS_IN_VIDEO, column)

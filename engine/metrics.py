"""Per-stage run metrics: what each stage did, how busy its workers were, what waited at its input.

The executors wrap every stage call in ``metered`` (the stage itself knows nothing of it), which times the
call and counts the rows in and out: a ``Span``. The local executor hands spans straight to its ``RunMeter``;
under Ray a worker stamps its span on the rows it returns (``SPAN_PREFIX`` columns, bookkeeping the manifests
leave out) and the driver takes them off as the rows arrive. Queue depths come from the executor (the rows
waiting in the local pipeline, the blocks in Ray Data's operator queues). Stages that generate tokens
(caption, categorize, dsg_video) say how many per row in a ``TOKENS_PREFIX`` column (engine.stage.with_tokens).

``RunMeter.summary()`` is run.json's ``metrics``; ``RunMeter.live()`` the same numbers during a run (for
Prometheus, engine.prometheus).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.stage import TOKENS_PREFIX, RunContext, Stage, run_stage

SPAN_PREFIX = "_span_"

_SPAN_TYPE = pa.struct([("stage", pa.string()), ("batch", pa.string()), ("worker", pa.string()),
                        ("start", pa.float64()), ("end", pa.float64()), ("busy", pa.float64()),
                        ("rows_in", pa.int64()), ("rows_out", pa.int64()), ("tokens", pa.int64())])
_BATCHES = itertools.count()  # batch ids unique within a process; the worker name makes them unique in a run


@dataclass(slots=True)
class Span:
    """One stage call on one batch."""

    stage: str
    batch: str  # unique in the run: a batch whose rows reach the driver in several pieces counts once
    worker: str  # host:pid of the process that ran it (one Ray actor, or a task worker, or the driver)
    start: float  # wall clock (time.time) at the start of the call
    end: float
    busy: float  # seconds inside the call (perf_counter)
    rows_in: int
    rows_out: int
    tokens: int = 0  # tokens the stage generated on the rows it computed


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def metered(stage: Stage, batch: pa.Table, ctx: RunContext, schema: dict[str, pa.DataType],
            index: int | None = None) -> tuple[pa.Table, Span]:
    """``run_stage`` on ``batch``, timed; the stage's token column is summed into the span and dropped."""
    worker = worker_name()
    start, begun = time.time(), time.perf_counter()
    out = run_stage(stage, batch, ctx, schema, index)
    busy = time.perf_counter() - begun
    tokens, column = 0, TOKENS_PREFIX + stage.name
    if column in out.column_names:
        tokens = int(pc.sum(pc.fill_null(out.column(column), 0)).as_py() or 0)
        out = out.drop_columns([column])
    span = Span(stage=stage.name, batch=f"{worker}:{next(_BATCHES)}", worker=worker, start=start,
                end=start + busy, busy=busy, rows_in=batch.num_rows, rows_out=out.num_rows, tokens=tokens)
    return out, span


def stamp(table: pa.Table, span: Span) -> pa.Table:
    """``table`` with ``span`` on every row, in a span column of its own (a stage used twice gets two)."""
    n = next(i for i in itertools.count() if f"{SPAN_PREFIX}{i}" not in table.column_names)
    value = pa.scalar({k: getattr(span, k) for k in _SPAN_TYPE.names}, _SPAN_TYPE)
    return table.append_column(f"{SPAN_PREFIX}{n}", pa.repeat(value, table.num_rows))


@dataclass
class _Queue:
    unit: str
    samples: int = 0
    total: float = 0.0
    peak: int = 0
    now: int = 0


@dataclass(slots=True)
class _Worker:
    """One worker's spans of one stage, summed: a run of millions of batches keeps one of these per worker."""

    first: float  # start of its first call
    last: float  # end of its last call
    batches: int = 0
    rows_in: int = 0
    rows_out: int = 0
    busy: float = 0.0
    tokens: int = 0

    def add(self, span: Span) -> None:
        self.first, self.last = min(self.first, span.start), max(self.last, span.end)
        self.batches += 1
        self.rows_in += span.rows_in
        self.rows_out += span.rows_out
        self.busy += span.busy
        self.tokens += span.tokens


@dataclass
class RunMeter:
    """Spans and queue samples of one run, summed per stage and worker; safe to feed from several threads."""

    workers: dict[str, dict[str, _Worker]] = field(default_factory=dict)  # stage -> worker -> sums, in order
    queues: dict[str, _Queue] = field(default_factory=dict)
    _seen: set[int] = field(default_factory=set, repr=False)  # batch ids taken off rows (they come in pieces)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def clear(self) -> None:
        with self._lock:
            self.workers.clear()
            self.queues.clear()
            self._seen.clear()

    def expect(self, stages: list[str]) -> None:
        """Stages of the pipeline about to run, so they are listed in order, also before their first span."""
        with self._lock:
            for name in stages:
                self.workers.setdefault(name, {})

    def add(self, span: Span, once: bool = False) -> None:
        """Count ``span``; with ``once``, only the first time its batch id is seen."""
        with self._lock:
            if once:
                key = hash(span.batch)
                if key in self._seen:
                    return
                self._seen.add(key)
            mine = self.workers.setdefault(span.stage, {})
            if span.worker not in mine:
                mine[span.worker] = _Worker(first=span.start, last=span.end)
            mine[span.worker].add(span)

    def queue(self, stage: str, depth: int, unit: str) -> None:
        """One sample of what waits at ``stage``'s input."""
        with self._lock:
            q = self.queues.setdefault(stage, _Queue(unit))
            q.samples, q.total, q.peak, q.now = q.samples + 1, q.total + depth, max(q.peak, depth), depth

    def take_spans(self, table: pa.Table) -> pa.Table:
        """Record the span columns of ``table`` and return it without them."""
        names = [c for c in table.column_names if c.startswith(SPAN_PREFIX)]
        for name in names:
            column = table.column(name)
            column = column.filter(pc.is_valid(column)).combine_chunks()
            if not len(column):
                continue
            # every row of a batch carries its span: one per batch id here, and add() skips ids seen before
            ids = pc.dictionary_encode(pc.struct_field(column, "batch")).indices.to_numpy(zero_copy_only=False)
            first = np.unique(ids, return_index=True)[1]
            for value in column.take(pa.array(first)).to_pylist():
                self.add(Span(**value), once=True)
        return table.drop_columns(names) if names else table

    def _copy(self) -> tuple[dict[str, list[_Worker]], dict[str, _Queue]]:
        with self._lock:
            return ({stage: [dataclasses.replace(w) for w in mine.values()] for stage, mine in self.workers.items()},
                    {k: dataclasses.replace(q) for k, q in self.queues.items()})

    def live(self) -> dict[str, dict]:
        """Counters so far, per stage: rows in/out, busy seconds, tokens, workers, current queue depth, and the
        wall-clock span of its calls (``first_start``, ``last_end``; None before its first)."""
        workers, queues = self._copy()
        return {stage: {"rows_in": sum(w.rows_in for w in mine), "rows_out": sum(w.rows_out for w in mine),
                        "busy_s": sum(w.busy for w in mine), "tokens": sum(w.tokens for w in mine),
                        "workers": len(mine), "queue_depth": queues[stage].now if stage in queues else None,
                        "first_start": min((w.first for w in mine), default=None),
                        "last_end": max((w.last for w in mine), default=None)}
                for stage, mine in workers.items()}

    def summary(self, wall_s: float, generates: Callable[[str], bool] = lambda name: False) -> dict:
        """run.json's ``metrics`` (see the README's "Run metrics"); ``generates(stage)`` says which stages
        report tokens_per_s."""
        workers, queues = self._copy()
        return {"wall_s": round(wall_s, 3),
                "stages": {stage: _stage_summary(mine, queues.get(stage), generates(stage))
                           for stage, mine in workers.items()}}


def _stage_summary(workers: list[_Worker], queue: _Queue | None, generates: bool) -> dict:
    busy = sum(w.busy for w in workers)
    wall = max(w.last for w in workers) - min(w.first for w in workers) if workers else 0.0
    # a worker waits between its first call and its last whenever it is not inside a call
    wait = sum(max(0.0, w.last - w.first - w.busy) for w in workers)
    rows_out = sum(w.rows_out for w in workers)
    out = {
        "rows_in": sum(w.rows_in for w in workers), "rows_out": rows_out, "workers": len(workers),
        "batches": sum(w.batches for w in workers), "busy_s": round(busy, 4), "wall_s": round(wall, 4),
        "busy_fraction": round(busy / (wall * len(workers)), 4) if wall > 0 and workers else None,
        "rows_per_s": round(rows_out / wall, 3) if wall > 0 else None,
        "wait_s": round(wait, 4),
        "queue_depth_mean": round(queue.total / queue.samples, 3) if queue and queue.samples else None,
        "queue_depth_max": queue.peak if queue and queue.samples else None,
        "queue_unit": queue.unit if queue else None,
    }
    if generates:
        tokens = sum(w.tokens for w in workers)
        out["tokens"] = tokens
        out["tokens_per_s"] = round(tokens / wall, 2) if wall > 0 else None
    return out

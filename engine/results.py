"""Results keyed by what produced them: per-stage fingerprints, the per-row result store, the rerun plan.

A stage's fingerprint hashes its name, its settings (execution knobs such as ``batch_size``, ``workers``,
``resources`` and ``*threads`` left out), its code (the vde version and the source of the stage's module and
of the modules of its package it uses), its models (hub revision or a hash of the local files) and the
fingerprints of the earlier stages it depends on: those that write a column it reads (declared in ``reads``
and ``reads_optional``) or rewrites, and the splitter for every stage after it.

What a stage computes for a row is stored under ``<out>/_state/results/<stage>-<fingerprint>/`` keyed by the
row (``clip_id``; ``video_id`` before the split and for the splitter, whose rows are a video's clips), with
the columns the stage writes and the row's error columns. ``run_stage`` looks a row up there before computing
it, so a rerun recomputes exactly the rows whose inputs changed: a new filter threshold re-filters from
stored scores; a clip the new threshold keeps is captioned then, one it drops is not; a stage added at the
end runs alone. Errors of kind "unexpected" are not stored: a rerun retries them.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import logging
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.io import join, output_fs, write_atomic
from engine.stage import CLIPS_IN_VIDEO, ERROR_COLUMNS, SEEN_PREFIX, UNEXPECTED, ModelRef, Stage, conform

log = logging.getLogger(__name__)

RESULTS = "_state/results"
EXECUTION_FIELDS = frozenset({"resources", "batch_size", "workers"})
KEY = "_key"


# -- fingerprints ------------------------------------------------------------------------------------------
def settings(stage: Stage) -> dict:
    """The stage's fields that can change its results."""
    return {k: v for k, v in stage.config().items() if k not in EXECUTION_FIELDS and not k.endswith("threads")}


@lru_cache(maxsize=None)
def code_identity(cls: type) -> str:
    """The vde version and the source of the stage's module and of the same-package modules it imports."""
    from importlib import metadata

    module = sys.modules[cls.__module__]
    package = cls.__module__.split(".")[0]
    files = {module.__file__}
    for value in vars(module).values():
        name = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
        if isinstance(name, str) and name.split(".")[0] == package and name in sys.modules:
            files.add(getattr(sys.modules[name], "__file__", None))
    digest = hashlib.sha256()
    try:
        digest.update(metadata.version("vde").encode())
    except metadata.PackageNotFoundError:
        pass
    for path in sorted(f for f in files if f):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def model_identity(ref: ModelRef) -> str:
    """A hub model by its snapshot revision; a local model by a hash of its files' names, sizes and times."""
    from engine.models import resolve_model

    try:
        path = Path(resolve_model(ref, download=False))
    except Exception:  # noqa: BLE001 - not resolvable offline: the name is all there is to go on
        return ref.name
    if "snapshots" in path.parts:
        return f"{ref.name}@{path.parts[path.parts.index('snapshots') + 1]}"
    if not path.exists():
        return ref.name
    digest = hashlib.sha256(ref.name.encode())
    for file in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path.parent)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return f"{ref.name}#{digest.hexdigest()[:16]}"


def stage_fingerprints(stages: list[Stage]) -> list[str]:
    """One fingerprint per stage (see the module docstring)."""
    writer: dict[str, int] = {}
    split_at: int | None = None
    fingerprints: list[str] = []
    for i, stage in enumerate(stages):
        columns = (*stage.reads, *getattr(stage, "reads_optional", ()), *stage.adds)
        after = {writer[c] for c in columns if c in writer}
        if split_at is not None:
            after.add(split_at)
        doc = {"stage": stage.name, "settings": settings(stage), "code": code_identity(type(stage)),
               "models": [model_identity(m) for m in stage.models()], "after": [fingerprints[j] for j in sorted(after)]}
        fingerprints.append(hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16])
        for column in stage.adds:
            writer[column] = i
        if stage.fan_out:
            split_at = i
    return fingerprints


def store_name(stage: Stage, fingerprint: str) -> str:
    return f"{stage.name}-{fingerprint}"


# -- the store --------------------------------------------------------------------------------------------
def row_keys(stage: Stage, table: pa.Table) -> pa.Array:
    """Each row's key: ``clip_id``, or ``<video_id>:video`` for rows without a clip and for the splitter."""
    video_keys = pc.binary_join_element_wise(table.column("video_id"), pa.scalar(":video"), "")
    if stage.fan_out or "clip_id" not in table.column_names:
        return _array(video_keys)
    clip = table.column("clip_id")
    return _array(pc.if_else(pc.is_valid(clip), clip, video_keys))


def _array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


FLUSH_ROWS = 200_000  # a buffered store writes a part once it holds this many rows (or when flushed)
PARTITION_ROWS = 500_000  # rows per part file once a store's parts are merged (``consolidate``) ...
LOOSE_PARTS = 16  # ... which happens after a run that leaves more parts than this unmerged


class ResultStore:
    """What one stage (at one fingerprint) computed, per row key.

    Parts are Parquet files in the store's folder; a key's rows come from the first part (by name) that has
    it. Lookups are Arrow hash joins over the key column: no Python object per stored row."""

    def __init__(self, output: str, stage: Stage, fingerprint: str, schema: dict[str, pa.DataType]):
        self.fs, root = output_fs(output)
        self.folder = join(root, RESULTS, store_name(stage, fingerprint))
        self.stage = stage
        columns = [*ERROR_COLUMNS, *stage.adds, *([CLIPS_IN_VIDEO] if stage.fan_out else [])]
        self.schema = {KEY: pa.string(), **{c: schema[c] for c in dict.fromkeys(columns) if c in schema}}
        self.table: pa.Table | None = None
        self.buffered = False  # True: ``write`` collects rows and ``flush`` writes them as one part
        self.pending: list[pa.Table] = []
        self.pending_rows = 0

    def parts(self) -> list[str]:
        if not self.fs.exists(self.folder):
            return []
        return sorted(p for p in self.fs.ls(self.folder, detail=False) if p.endswith(".parquet") and "/.tmp-" not in p)

    def load(self) -> ResultStore:
        """Read every part; a key's rows come from the first part (by name) that has it."""
        tables = []
        arrow_schema = pa.schema([pa.field(n, t) for n, t in self.schema.items()])
        for number, path in enumerate(self.parts()):
            try:
                with self.fs.open(path, "rb") as handle:
                    table = conform(pq.read_table(handle), self.schema).select(list(self.schema))
            except (OSError, pa.ArrowInvalid) as exc:  # a part torn by a crash: its rows are computed again
                log.warning("stored results %s unreadable (%s): recomputing its rows", path, exc)
                continue
            # Parquet names list items "element", Arrow "item": equal types, different manifest bytes
            table = table.cast(arrow_schema)
            tables.append(table.append_column("_part", pa.array(np.full(table.num_rows, number, np.int32))))
        if not tables:
            return self
        table = pa.concat_tables(tables)
        if len(tables) > 1:
            first = table.group_by(KEY, use_threads=False).aggregate([("_part", "min")])
            owner = pc.index_in(table.column(KEY), value_set=first.column(KEY))
            table = table.filter(pc.equal(table.column("_part"), first.column("_part_min").take(owner)))
        # sorted by key (stably: a video's clips keep their order), with where each key's rows start
        self.table = table.drop_columns(["_part"]).sort_by([(KEY, "ascending")]).combine_chunks()
        self._index_keys()
        return self

    def _index_keys(self) -> None:
        keys = self.table.column(KEY).chunk(0) if self.table.num_rows else pa.array([], pa.string())
        first = np.ones(len(keys), bool)
        if len(keys) > 1:
            first[1:] = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1)).to_numpy(zero_copy_only=False)
        self.key_starts = np.flatnonzero(first)
        self.key_counts = np.diff(np.append(self.key_starts, len(keys)))
        self.unique_keys = keys.take(pa.array(self.key_starts))

    def split(self, todo: pa.Table) -> tuple[pa.Table, pa.Table]:
        """(rows completed from the store, rows still to compute)."""
        if self.table is None or todo.num_rows == 0:
            return todo.slice(0, 0), todo
        keys = row_keys(self.stage, todo)
        where = pc.index_in(keys, value_set=self.unique_keys)
        found = pc.is_valid(where).to_numpy(zero_copy_only=False)
        miss = todo.filter(pa.array(~found))
        if not found.any():
            return todo.slice(0, 0), miss
        # every stored row of each found key (the store is sorted by key, stably), in the todo's order
        which = pc.drop_null(where).to_numpy(zero_copy_only=False).astype(np.int64)
        counts = self.key_counts[which]
        take_todo = np.repeat(np.flatnonzero(found), counts)
        run_start = np.repeat(np.cumsum(counts) - counts, counts)
        take_store = np.repeat(self.key_starts[which], counts) + (np.arange(len(take_todo)) - run_start)
        hits = todo.combine_chunks().take(pa.array(take_todo))
        stored = self.table.take(pa.array(take_store))
        for name in self.schema:
            if name == KEY:
                continue
            if name in hits.column_names:
                hits = hits.set_column(hits.schema.get_field_index(name), name, stored.column(name))
            else:
                hits = hits.append_column(name, stored.column(name))
        return hits, miss

    def write(self, out: pa.Table) -> None:
        """Store what the stage computed; unexpected errors are left out so that a rerun retries them.
        Buffered, the rows wait for ``flush`` (or ``FLUSH_ROWS``); otherwise they are one part now."""
        if out.num_rows == 0:
            return
        keep = pc.invert(pc.fill_null(pc.equal(out.column("error_kind"), UNEXPECTED), False))
        out = out.filter(keep)
        if out.num_rows == 0:
            return
        values = {k: v for k, v in self.schema.items() if k != KEY}
        table = conform(out, values).append_column(KEY, row_keys(self.stage, out)).select(list(self.schema))
        self.pending.append(table)
        if len(self.pending) >= 64:  # many small batches: one table, so memory follows rows, not batches
            self.pending = [pa.concat_tables(self.pending).combine_chunks()]
        self.pending_rows += table.num_rows
        if not self.buffered or self.pending_rows >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the rows waiting in the buffer as one part, named by its keys."""
        if not self.pending:
            return
        table = pa.concat_tables(self.pending)
        self.pending, self.pending_rows = [], 0
        keys = pc.unique(table.column(KEY)).sort()
        name = hashlib.sha1("\n".join(keys.to_pylist()).encode()).hexdigest()[:20]
        self._write_part(join(self.folder, f"{name}.parquet"), table)

    def _write_part(self, path: str, table: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(table.combine_chunks(), buffer, compression="zstd")
        # no fsync: a part is recomputable work, and a part a crash tore is skipped by ``load``
        write_atomic(self.fs, path, buffer.getvalue(), durable=False)

    def consolidate(self) -> int:
        """Merge many parts into few: ``PARTITION_ROWS`` rows each, sorted by key, named ``0-NNNNN-...`` so
        they come first. They are in place before the old parts go, so a kill at any point loses nothing.
        Returns how many parts were replaced (0: already few enough)."""
        old = self.parts()
        if sum(not p.rsplit("/", 1)[-1].startswith("0-") for p in old) <= LOOSE_PARTS:
            return 0
        table = self.load().table
        if table is None:
            return 0
        table = table.sort_by([(KEY, "ascending")])
        tag = hashlib.sha1("\n".join(p.rsplit("/", 1)[-1] for p in old).encode()).hexdigest()[:12]
        written = []
        for number, start in enumerate(range(0, table.num_rows, PARTITION_ROWS)):
            path = join(self.folder, f"0-{number:05d}-{tag}.parquet")
            self._write_part(path, table.slice(start, PARTITION_ROWS))
            written.append(path)
        for path in old:
            if path not in written:
                self.fs.rm(path)
        self.table = table
        return len(old)


_OPEN: dict[tuple[str, str], ResultStore] = {}  # per process: one loaded store per (run, stage folder)


def open_store(output: str, run_id: str, stage: Stage, fingerprint: str, schema: dict) -> ResultStore:
    store = ResultStore(output, stage, fingerprint, schema)
    cached = _OPEN.get((run_id, store.folder))
    if cached is None:
        for key in [k for k in _OPEN if k[0] != run_id]:  # an earlier run's stores: stale now
            _OPEN.pop(key).flush()
        cached = _OPEN[(run_id, store.folder)] = store.load()
        cached.buffered = run_id in _BUFFERED
    return cached


_BUFFERED: set[str] = set()  # runs whose stores collect rows into bigger parts in this process


def buffer_stores(run_id: str) -> None:
    """Let this process's stores of ``run_id`` collect rows into one part per work unit: for an executor that
    calls ``flush_stores`` at the end of each (the local one)."""
    _BUFFERED.add(run_id)
    for (run, _), store in _OPEN.items():
        if run == run_id:
            store.buffered = True


def flush_stores(run_id: str) -> None:
    """Write what this process's stores of ``run_id`` hold in their buffers."""
    for (run, _), store in list(_OPEN.items()):
        if run == run_id:
            store.flush()


def close_stores(run_id: str) -> None:
    """Flush and forget this process's stores of ``run_id`` (their tables are the run's biggest objects)."""
    for key in [k for k in _OPEN if k[0] == run_id]:
        _OPEN.pop(key).flush()
    _BUFFERED.discard(run_id)


def prune(output: str, keep: set[str]) -> list[str]:
    """Delete stored results of stages (or fingerprints) not in ``keep``: files they describe (clips, latents)
    are rewritten in place by the current pipeline, so old results could no longer be trusted."""
    fs, root = output_fs(output)
    folder = join(root, RESULTS)
    if not fs.exists(folder):
        return []
    removed = []
    for path in fs.ls(folder, detail=False):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name not in keep:
            fs.rm(path, recursive=True)
            removed.append(name)
    return removed


# -- the plan ----------------------------------------------------------------------------------------------
@dataclass(kw_only=True, slots=True)
class Step:
    stage: str
    unit: str  # "videos" or "clips"
    reused: int  # rows completed from stored results
    run: int  # rows to compute for certain
    maybe: int = 0  # rows an earlier stage still computes: reused or computed once their inputs are known
    unsplit: int = 0  # videos not split yet: this stage also sees their clips


@dataclass(kw_only=True, slots=True)
class Plan:
    steps: list[Step] = field(default_factory=list)
    table: pa.Table | None = None  # every row as far as stored results take it; PENDING marks the rest
    pending_videos: set[str] = field(default_factory=set)  # videos with work left

    def describe(self) -> list[str]:
        """One line per stage: what it will compute and what it reuses."""
        lines = []
        for s in self.steps:
            parts = [f"runs on {s.run} {s.unit}"] if s.run else []
            if s.maybe:
                parts.append(f"{s.maybe} {s.unit} wait for earlier stages")
            if s.unsplit:
                parts.append(f"the clips of {s.unsplit} video(s) not split yet")
            if s.reused or not parts:
                parts.append(f"reuses {s.reused} {s.unit}" if parts else f"reuses all {s.reused} {s.unit}")
            lines.append(f"{s.stage:<14} " + "; ".join(parts))
        return lines


PENDING = "_pending"


def make_plan(stages: list[Stage], schemas: list[dict], videos: pa.Table, stores: list[ResultStore | None]) -> Plan:
    """Walk the stages over stored results only: what each stage will reuse and compute."""
    from engine.stage import todo_mask

    plan = Plan()
    table = videos.append_column(PENDING, pa.array(np.zeros(videos.num_rows, bool)))
    split_seen = False
    for index, (stage, schema, store) in enumerate(zip(stages, schemas, stores)):
        if stage.barrier:  # its decisions need every clip: what follows is known once it has run
            waiting = int(pc.sum(todo_mask(stages[index + 1] if index + 1 < len(stages) else stage, table)
                                 .cast(pa.int64())).as_py() or 0)
            plan.steps += [Step(stage=s.name, unit="clips", reused=0, run=0, maybe=waiting) for s in stages[index:]]
            break
        mask = todo_mask(stage, table)
        # the rows a finished video's stage processed: the run then counts them into the completion index
        seen = pc.and_(mask, pc.invert(table.column(PENDING))).cast(pa.int8())
        name = SEEN_PREFIX + stage.name
        table = table.set_column(table.schema.get_field_index(name), name, seen) if name in table.column_names \
            else table.append_column(name, seen)
        todo, rest = table.filter(mask), table.filter(pc.invert(mask))
        waiting = todo.filter(todo.column(PENDING))
        fresh = todo.filter(pc.invert(todo.column(PENDING)))
        hits, misses = store.split(fresh) if store is not None else (fresh.slice(0, 0), fresh)
        misses = misses.set_column(misses.schema.get_field_index(PENDING), PENDING,
                                   pa.array(np.ones(misses.num_rows, bool)))
        unsplit = 0
        if split_seen and not stage.fan_out and "clip_id" in rest.column_names:
            unsplit = int(pc.sum(pc.and_(rest.column(PENDING), pc.is_null(rest.column("clip_id")))
                                 .cast(pa.int64())).as_py() or 0)
        plan.steps.append(Step(stage=stage.name, unit="clips" if split_seen and not stage.fan_out else "videos",
                               reused=fresh.num_rows - misses.num_rows, run=misses.num_rows, maybe=waiting.num_rows,
                               unsplit=unsplit))
        full = {**schema, PENDING: pa.bool_()}
        parts = [conform(t, full) for t in (hits, misses, waiting, rest) if t.num_rows]
        table = pa.concat_tables([p.select(list(parts[0].column_names)) for p in parts]) if parts else \
            conform(table.slice(0, 0), full)
        split_seen = split_seen or stage.fan_out
    plan.table = table
    pending = table.filter(table.column(PENDING)).column("video_id").to_pylist()
    plan.pending_videos = set(pending)
    return plan

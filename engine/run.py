"""One run: list and identify inputs, plan from stored results, execute what changed, commit the generation.

The plan walks the stages over their stored results (engine.results): what each will reuse and compute.
Videos with nothing left to compute are finished from the store on the driver; the others go to the
executor, whose stages reuse what they can and store what they compute. The run then commits one generation
(engine.generation): manifests, the stages' finalize outputs (funnel, shards, ...), ``run.json`` last.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata

import pyarrow as pa
import pyarrow.compute as pc

from engine import completion, generation
from engine.barrier import run_segments
from engine.content import ContentIds
from engine.generation import RUN_FILE
from engine.gpu import GpuSampler
from engine.io import VIDEO_EXTENSIONS, InputError, _http_cause, _protocol, check_regular, list_inputs, mark_duplicates
from engine.manifest import Manifest, error_counts
from engine.partitions import Spool, discard_spools, partition_count
from engine.pipeline import Pipeline
from engine.results import (PENDING, Plan, ResultStore, close_stores, make_plan, open_store, prune, settings,
                            stage_fingerprints, store_name)
from engine.stage import BASE_COLUMNS, ERROR, OK, RunContext, describe, error_fields

log = logging.getLogger(__name__)

VERSIONED = ("vde", "ray", "av", "decord", "scenedetect-headless", "opencv-python-headless", "pyarrow", "torch",
             "transformers", "open_clip_torch", "diffusers", "webdataset", "rapidocr")


class RunRequestError(ValueError):
    """A run option that cannot be honoured (e.g. ``--from`` a stage the pipeline lacks)."""


@dataclass(kw_only=True, slots=True)
class RunSummary:
    videos: int  # inputs seen
    videos_ok: int
    videos_error: int  # videos that failed before they were split (input faults)
    clips_error: int  # clips that failed in a stage after the split
    skipped: int  # videos with nothing to compute: every stage's result was stored already
    clips: int
    kept: int
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_rows: dict[str, int] = field(default_factory=dict)  # rows each stage computed in this run (0: all reused)
    errors_by_cause: dict[str, int] = field(default_factory=dict)  # "stage: cause" -> videos and clips
    errors_by_kind: dict[str, int] = field(default_factory=dict)  # input / unexpected -> videos and clips
    inputs_changed: dict[str, list[str]] = field(default_factory=dict)  # added / removed / replaced since the last run
    plan: list[str] = field(default_factory=list)  # what the run set out to compute and reuse
    videos_without_clips: int = 0  # split videos that gave no clip (see shots_no_clip for why)
    shots_no_clip: dict[str, int] = field(default_factory=dict)  # the split's reason -> shots that gave no clip
    output: str = ""


def ingest(uris: list[str], ids: ContentIds, threads: int = 16) -> pa.Table:
    """One row per input with a content-derived id. An input that cannot be read becomes an error row
    (its id then derives from the URI) instead of stopping the run."""

    def identify(uri: str) -> tuple[str, int]:
        check_regular(uri)
        try:
            return ids.identify(uri)
        except OSError as exc:  # fsspec reports HTTP failures as file errors: say what happened
            if _protocol(uri) in ("http", "https"):
                raise InputError(_http_cause(exc)) from None
            raise

    def one(uri: str) -> dict:
        try:
            vid, size = identify(uri)
            return {"uri": uri, "video_id": vid, "bytes": size, "status": OK}
        except Exception as exc:  # noqa: BLE001 - any unreadable input is data
            vid = "uri-" + hashlib.sha256(uri.encode()).hexdigest()[:12]
            cause = (str(exc).splitlines()[0] or "unreadable") if isinstance(exc, InputError) else describe(exc)
            return {"uri": uri, "video_id": vid, "bytes": None, **error_fields("ingest", uri, cause)}

    # chunks of inputs per task: a cached identity costs microseconds, a thread pool's submit about a hundred
    chunk = max(1, min(256, len(uris) // (threads * 4)))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        chunks = pool.map(lambda start: [one(u) for u in uris[start:start + chunk]], range(0, len(uris), chunk))
        rows = [row for part in chunks for row in part]
    return pa.Table.from_pylist(mark_duplicates(rows), schema=pa.schema(BASE_COLUMNS))


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def input_changes(manifest: Manifest, videos: pa.Table) -> dict[str, list[str]]:
    """Inputs added, removed or replaced (same URI, other content) since the current generation."""
    try:
        previous = manifest.read("videos", columns=["uri", "video_id"])
    except (FileNotFoundError, OSError, KeyError, ValueError, pa.ArrowInvalid):
        return {}
    def last_per_uri(table: pa.Table) -> pa.Table:  # an input list may name a URI twice: its last row counts
        grouped = table.group_by("uri", use_threads=False).aggregate([("video_id", "last")])
        return pa.table({"uri": grouped.column("uri"), "video_id": grouped.column("video_id_last")})

    now, previous = last_per_uri(videos.select(["uri", "video_id"])), last_per_uri(previous)
    before_uris, now_uris = previous.column("uri"), now.column("uri")
    both = now.join(previous, "uri", join_type="inner", right_suffix="_before", use_threads=False)
    replaced = both.filter(pc.not_equal(both.column("video_id"), both.column("video_id_before"))).column("uri")
    changes = {"added": now_uris.filter(pc.invert(pc.is_in(now_uris, value_set=before_uris))),
               "removed": before_uris.filter(pc.invert(pc.is_in(before_uris, value_set=now_uris))),
               "replaced": replaced}
    return {k: sorted(v.to_pylist()) for k, v in changes.items() if len(v)}


def run_pipeline(pipeline: Pipeline, inputs: str, output: str, executor, on_error: str = "record",
                 force: bool = False, from_stage: str | None = None, dry_run: bool = False,
                 on_plan: Callable[[Plan], None] | None = None, partitions: int | None = None) -> RunSummary:
    """Run ``pipeline`` over ``inputs`` into ``output``, recomputing only what changed.

    ``force`` recomputes every stage, ``from_stage`` that stage and every later one; ``dry_run`` stops after
    the plan (``on_plan`` sees it before any work starts) and writes nothing. ``partitions`` splits the
    manifests into that many parts by video id (default: one per 20,000 inputs, engine.partitions)."""
    started = time.time()
    stages = pipeline.stages
    names = [s.name for s in stages]
    if from_stage is not None and from_stage not in names:
        raise RunRequestError(f"--from {from_stage}: the pipeline has no such stage (its stages: {', '.join(names)})")
    first_fresh = 0 if force else names.index(from_stage) if from_stage is not None else len(stages)
    manifest = Manifest(output)
    uris = list_inputs(inputs)
    if not uris:
        from engine.errors import UserError

        raise UserError(f"no videos in '{inputs}' (looked for {', '.join(VIDEO_EXTENSIONS[:4])}, ...); give a folder "
                        "of videos, a glob, a .txt list of URIs or one video")
    ids = ContentIds(output)
    videos = ingest(uris, ids)
    fingerprints = stage_fingerprints(stages)
    schemas = [pipeline.schema_after(i) for i in range(len(stages))]
    run_id = uuid.uuid4().hex[:12]
    partitions = partitions or partition_count(videos.num_rows)
    known, planned = completion.Known(), videos
    if dry_run and first_fresh == len(stages):  # a check only: the completion index answers for unchanged videos
        known, planned = completion.read(output, stages, fingerprints, videos, partitions)
    # the stores the plan reads are the ones this process's stages then use (one copy of each in memory)
    stores = [None if i >= first_fresh or not planned.num_rows else open_store(output, run_id, s, fp, schema)
              for i, (s, fp, schema) in enumerate(zip(stages, fingerprints, schemas))]
    plan = known.add_to(make_plan(stages, schemas, planned, stores))
    del stores, planned
    changes = input_changes(manifest, videos)
    if on_plan is not None:
        on_plan(plan)
    if dry_run:
        close_stores(run_id)
        return _summary(videos, videos.slice(0, 0), videos.slice(0, 0), {}, {}, plan, changes, started, output)

    meter = getattr(executor, "metrics", None)  # engine.metrics.RunMeter: this run's numbers only
    if meter is not None:
        meter.clear()
        meter.expect(names)
    marker = generation.begin(output, run_id)
    completion.clear(output)  # written again once this run has committed
    ids.save()
    discard_spools(output)  # rows of a run that was killed: its results store has what it finished
    # Results of other fingerprints describe files the current stages rewrite in place: drop them.
    prune(output, {store_name(s, fp) for i, (s, fp) in enumerate(zip(stages, fingerprints)) if i < first_fresh})
    ctx = RunContext(output=output, on_error=on_error, run_id=run_id, fingerprints=tuple(fingerprints),
                     fresh=frozenset(names[first_fresh:]))
    pending = pa.array(sorted(plan.pending_videos), pa.string())
    finished = plan.table.filter(pc.invert(plan.table.column(PENDING))).drop_columns([PENDING])
    plan.table = None  # split into ``finished`` and ``todo``: not needed twice

    def pending_mask(table: pa.Table) -> pa.Array:
        return pc.is_in(table.column("video_id"), value_set=pending)

    finished = finished.filter(pc.invert(pending_mask(finished)))
    todo = videos.filter(pending_mask(videos))
    log.info("%d inputs: %d to process, %d finished from stored results", videos.num_rows, todo.num_rows,
             videos.num_rows - todo.num_rows)
    split_at = pipeline.fan_out_index
    video_stages = tuple(s.name for s in stages[:split_at]) if split_at is not None else ()

    spool = Spool(output, run_id, partitions)
    recorder = completion.CompletionRecorder(stages, fingerprints, partitions)
    # Without a barrier, finished rows stream into the spool; a barrier needs every clip on the driver first.
    streaming = not any(s.barrier for s in stages)

    def first_segment(segment: Pipeline, part: RunContext) -> pa.Table:
        if streaming:
            spool.add(finished)
            if todo.num_rows:
                executor.run(segment, todo, part, spool.add)
            return finished.slice(0, 0)
        tables = [finished]
        if todo.num_rows:
            executor.run(segment, todo, part, tables.append)
        return pa.concat_tables([t for t in tables if t.num_rows] or [finished], promote_options="permissive")

    def clips_after(rows: pa.Table, index: int) -> pa.Table:
        return manifest.compact(rows, schemas[index], pipeline.video_columns(), video_stages, write=False)[1]

    gpu = GpuSampler()  # NVML on this machine; nothing where there is none
    gpu.start()
    try:
        table, barrier_seconds = run_segments(pipeline, first_segment, ctx, executor, clips_after,
                                              recorder.before_barrier)
        if not streaming:
            spool.add(table)
        del table
        spool.flush()
    except BaseException as exc:
        gpu.stop()
        generation.set_phase(output, marker, generation.FAILED, describe(exc))
        raise
    close_stores(run_id)  # flushes what this process still buffers; frees the loaded stores

    generation.set_phase(output, marker, generation.COMMITTING)
    video_table, clips, bounds, stage_seconds, stage_rows = manifest.compact_partitions(
        (spool.read(k) for k in range(spool.partitions)), schemas[-1], pipeline.video_columns(), video_stages,
        recorder.partition)
    spool.discard()
    missing = videos.filter(pc.invert(pc.is_in(videos.column("video_id"), value_set=video_table.column("video_id"))))
    if missing.num_rows:
        raise RuntimeError(f"the executor lost {missing.num_rows} video(s), e.g. "
                           f"{sorted(missing.column('video_id').to_pylist())[:3]}")
    stage_seconds.update(barrier_seconds)
    for stage in stages:
        if stage.finalizes and not stage.barrier:  # a barrier's finalize ran between the stages
            begun = time.perf_counter()
            added = stage.finalize(ctx, clips)
            stage_seconds[f"{stage.name} (finalize)"] = time.perf_counter() - begun
            if added is not None and added.num_rows:
                clips = manifest.add_clip_columns(clips, added, bounds)
    summary = _summary(videos, video_table, clips, stage_seconds, {n: stage_rows.get(n, 0) for n in names}, plan,
                       changes, started, output)
    metrics, gpu_metrics = None, gpu.stop()
    if meter is not None:
        generates = {s.name for s in stages if s.generates_tokens}
        metrics = meter.summary(time.time() - started, generates.__contains__)
        if gpu_metrics is not None:
            metrics["gpu"] = gpu_metrics
        for key, seconds in stage_seconds.items():  # "dedup (barrier)", "shard (finalize)": on the driver
            stage, _, what = key.partition(" (")
            if what and stage in metrics["stages"]:
                metrics["stages"][stage]["finalize_s"] = round(seconds, 4)
    _write_run_file(manifest, pipeline, fingerprints, inputs, executor, summary, started, marker, metrics)
    recorder.write(output)
    generation.finish(output)
    for stage, fp, schema in zip(stages, fingerprints, schemas):  # many small parts into few, one store at a time
        ResultStore(output, stage, fp, schema).consolidate()
    return summary


def _summary(videos: pa.Table, video_table: pa.Table, clips: pa.Table, stage_seconds: dict, stage_rows: dict,
             plan: Plan, changes: dict, started: float, output: str) -> RunSummary:
    def count(table: pa.Table, mask) -> int:  # noqa: ANN001 - a boolean array
        return int(pc.sum(pc.fill_null(mask, False).cast(pa.int64())).as_py() or 0) if table.num_rows else 0

    # kept: clips that went through every stage without error and that no filter dropped
    kept_mask = pc.equal(clips.column("status"), OK) if clips.num_rows else None
    if clips.num_rows and "keep" in clips.column_names:
        kept_mask = pc.and_(kept_mask, pc.fill_null(clips.column("keep"), True))
    n_error = count(video_table, pc.equal(video_table.column("status"), ERROR)) if video_table.num_rows else 0
    return RunSummary(
        videos=video_table.num_rows, videos_ok=video_table.num_rows - n_error, videos_error=n_error,
        clips_error=count(clips, pc.equal(clips.column("status"), ERROR)) if clips.num_rows else 0,
        skipped=videos.num_rows - len(plan.pending_videos), clips=clips.num_rows,
        kept=count(clips, kept_mask) if clips.num_rows else 0, seconds=time.time() - started,
        stage_seconds=stage_seconds, stage_rows=stage_rows,
        errors_by_cause=error_counts([video_table, clips], "cause"),
        errors_by_kind=error_counts([video_table, clips], "kind"), inputs_changed=changes, plan=plan.describe(),
        output=output, **_shot_drops(video_table, clips),
    )


def _shot_drops(videos: pa.Table, clips: pa.Table) -> dict:
    """How many split videos and shots gave no clip, and why (the split's shots_no_clip_* columns)."""
    reasons = [c for c in videos.column_names if c.startswith("shots_no_clip_")]
    if not reasons:
        return {}
    split = pc.and_(pc.equal(videos.column("status"), OK), pc.is_valid(videos.column(reasons[0])))
    with_clips = pa.array([], pa.string())
    if "clip_id" in clips.column_names and clips.num_rows:
        with_clips = pc.unique(clips.filter(pc.is_valid(clips.column("clip_id"))).column("video_id"))
    ids = videos.filter(split).column("video_id")
    without = pc.sum(pc.invert(pc.is_in(ids, value_set=with_clips)).cast(pa.int64())).as_py() or 0
    return {"videos_without_clips": int(without),
            "shots_no_clip": {c.removeprefix("shots_no_clip_"): int(pc.sum(videos.column(c)).as_py() or 0)
                              for c in reasons}}


def _write_run_file(manifest: Manifest, pipeline: Pipeline, fingerprints: list[str], inputs: str, executor,
                    summary: RunSummary, started: float, marker: dict, metrics: dict | None = None) -> None:
    """The generation record, written last: its rename is the commit."""
    history = []
    if manifest.exists(RUN_FILE):
        previous = manifest.read_json(RUN_FILE)
        history = previous.get("history", []) + [{k: previous.get(k) for k in ("started", "finished", "summary")}]
    manifest.write_json(RUN_FILE, {
        "generation": marker["generation"],
        "run_id": marker["run_id"],
        "pipeline": {"name": pipeline.name, "source": pipeline.source, "text": pipeline.text,
                     "stages": [{"stage": s.name, **s.config()} for s in pipeline.stages]},
        # which settings produced which columns: every column of the manifest names the stage result behind it
        "columns": [{"stage": s.name, "fingerprint": fp, "settings": settings(s), "columns": sorted(s.adds),
                     "computed_rows": summary.stage_rows.get(s.name, 0)}
                    for s, fp in zip(pipeline.stages, fingerprints)],
        # what stages declare about their columns and thresholds (the dashboard reads its threshold lines here)
        "declarations": {str(i): s.declares() for i, s in enumerate(pipeline.stages) if hasattr(s, "declares")},
        "inputs": inputs,
        "executor": executor.name,
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "finished": datetime.now(timezone.utc).isoformat(),
        "versions": versions(),
        "summary": asdict(summary),
        "metrics": metrics,  # per-stage throughput, busy fraction, queue depth (engine.metrics); this run only
        "history": history[-20:],
    })

"""One run: list inputs, skip finished videos, execute, compact the manifest, write the run summary."""

from __future__ import annotations

import logging
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata

import pyarrow as pa
import pyarrow.compute as pc

from engine.io import fingerprint, list_inputs
from engine.manifest import Manifest, error_causes
from engine.pipeline import Pipeline
from engine.stage import BASE_COLUMNS, ERROR, OK, RunContext

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
VERSIONED = ("vde", "ray", "av", "decord", "scenedetect-headless", "opencv-python-headless", "pyarrow", "torch",
             "transformers", "open_clip_torch", "diffusers", "webdataset", "rapidocr")


@dataclass(kw_only=True, slots=True)
class RunSummary:
    videos: int  # inputs seen
    videos_ok: int
    videos_error: int
    skipped: int  # finished by an earlier run, not processed again
    clips: int
    kept: int
    seconds: float
    clips_error: int = 0  # clips that failed in a stage (their video is ok); their causes are in errors_by_cause
    stage_seconds: dict[str, float] = field(default_factory=dict)
    errors_by_cause: dict[str, int] = field(default_factory=dict)
    output: str = ""


def ingest(uris: list[str], threads: int = 16) -> pa.Table:
    """One row per input with a content-derived id. An input that cannot be read becomes an error row
    (its id then derives from the URI) instead of stopping the run."""
    import hashlib

    def one(uri: str) -> dict:
        try:
            vid, size = fingerprint(uri)
            return {"uri": uri, "video_id": vid, "bytes": size, "status": OK, "error": None}
        except Exception as exc:  # noqa: BLE001 - any unreadable input is data
            vid = "uri-" + hashlib.sha256(uri.encode()).hexdigest()[:12]
            cause = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"
            return {"uri": uri, "video_id": vid, "bytes": None, "status": ERROR, "error": f"ingest: {uri}: {cause}"}

    with ThreadPoolExecutor(max_workers=threads) as pool:
        rows = list(pool.map(one, uris))
    seen, unique = set(), []
    for row in rows:
        if row["video_id"] in seen:
            log.info("skipping %s: same content as an earlier input", row["uri"])
            continue
        seen.add(row["video_id"])
        unique.append(row)
    return pa.Table.from_pylist(unique, schema=pa.schema(BASE_COLUMNS))


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def run_pipeline(pipeline: Pipeline, inputs: str, output: str, executor, on_error: str = "record") -> RunSummary:
    started = time.time()
    manifest = Manifest(output)
    uris = list_inputs(inputs)
    videos = ingest(uris)
    done = manifest.completed_videos()
    todo = videos.filter(pa.array([v not in done for v in videos.column("video_id").to_pylist()]))
    log.info("%d inputs, %d already finished, %d to process", videos.num_rows, videos.num_rows - todo.num_rows,
             todo.num_rows)
    ctx = RunContext(output=output, on_error=on_error)
    if todo.num_rows:
        executor.run(pipeline, todo, ctx, manifest.write_part)
    video_table, clips, stage_seconds = manifest.compact(pipeline.video_columns())
    for stage in pipeline.stages:
        if stage.finalizes:
            begun = time.perf_counter()
            added = stage.finalize(ctx, clips)
            stage_seconds[f"{stage.name} (finalize)"] = time.perf_counter() - begun
            if added is not None and added.num_rows:
                clips = manifest.add_clip_columns(clips, added)
    # kept: clips that went through every stage without error and that no filter dropped
    kept_mask = pc.equal(clips.column("status"), OK)
    if "keep" in clips.column_names:
        kept_mask = pc.and_(kept_mask, pc.fill_null(clips.column("keep"), True))
    kept = int(pc.sum(pc.fill_null(kept_mask, False).cast(pa.int64())).as_py() or 0)
    n_error = int(pc.sum(pc.equal(video_table.column("status"), ERROR).cast(pa.int64())).as_py() or 0)
    clips_error = int(pc.sum(pc.equal(clips.column("status"), ERROR).cast(pa.int64())).as_py() or 0) \
        if clips.num_rows else 0
    causes = error_causes(video_table)
    for cause, count in (error_causes(clips) if clips.num_rows else {}).items():
        causes[cause] = causes.get(cause, 0) + count
    summary = RunSummary(
        videos=video_table.num_rows, videos_ok=video_table.num_rows - n_error, videos_error=n_error,
        skipped=videos.num_rows - todo.num_rows, clips=clips.num_rows, kept=kept,
        seconds=time.time() - started, stage_seconds=stage_seconds, clips_error=clips_error,
        errors_by_cause=dict(sorted(causes.items(), key=lambda kv: -kv[1])), output=output,
    )
    _write_run_file(manifest, pipeline, inputs, executor, summary, started)
    return summary


def _write_run_file(manifest: Manifest, pipeline: Pipeline, inputs: str, executor, summary: RunSummary,
                    started: float) -> None:
    history = []
    if manifest.exists(RUN_FILE):
        previous = manifest.read_json(RUN_FILE)
        history = previous.get("history", []) + [{k: previous.get(k) for k in ("started", "finished", "summary")}]
    from dataclasses import asdict

    manifest.write_json(RUN_FILE, {
        "pipeline": {"name": pipeline.name, "source": pipeline.source, "text": pipeline.text,
                     "stages": [{"stage": s.name, **s.config()} for s in pipeline.stages]},
        "inputs": inputs,
        "executor": executor.name,
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "finished": datetime.now(timezone.utc).isoformat(),
        "versions": versions(),
        "summary": asdict(summary),
        "history": history[-20:],
    })

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

from engine.barrier import run_segments
from engine.io import VIDEO_EXTENSIONS, InputError, fingerprint, list_inputs, mark_duplicates
from engine.manifest import Manifest, error_counts
from engine.pipeline import Pipeline
from engine.stage import BASE_COLUMNS, ERROR, OK, RunContext, describe, error_fields

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
VERSIONED = ("vde", "ray", "av", "decord", "scenedetect-headless", "opencv-python-headless", "pyarrow", "torch",
             "transformers", "open_clip_torch", "diffusers", "webdataset", "rapidocr")


@dataclass(kw_only=True, slots=True)
class RunSummary:
    videos: int  # inputs seen
    videos_ok: int
    videos_error: int  # videos that failed before they were split (input faults)
    clips_error: int  # clips that failed in a stage after the split
    skipped: int  # finished by an earlier run, not processed again
    clips: int
    kept: int
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    errors_by_cause: dict[str, int] = field(default_factory=dict)  # "stage: cause" -> videos and clips
    errors_by_kind: dict[str, int] = field(default_factory=dict)  # input / unexpected -> videos and clips
    videos_without_clips: int = 0  # split videos that gave no clip (see shots_no_clip for why)
    shots_no_clip: dict[str, int] = field(default_factory=dict)  # the split's reason -> shots that gave no clip
    output: str = ""


def ingest(uris: list[str], threads: int = 16) -> pa.Table:
    """One row per input with a content-derived id. An input that cannot be read becomes an error row
    (its id then derives from the URI) instead of stopping the run."""
    import hashlib

    def one(uri: str) -> dict:
        try:
            vid, size = fingerprint(uri)
            return {"uri": uri, "video_id": vid, "bytes": size, "status": OK}
        except Exception as exc:  # noqa: BLE001 - any unreadable input is data
            vid = "uri-" + hashlib.sha256(uri.encode()).hexdigest()[:12]
            cause = (str(exc).splitlines()[0] or "unreadable") if isinstance(exc, InputError) else describe(exc)
            return {"uri": uri, "video_id": vid, "bytes": None, **error_fields("ingest", uri, cause)}

    with ThreadPoolExecutor(max_workers=threads) as pool:
        rows = list(pool.map(one, uris))
    return pa.Table.from_pylist(mark_duplicates(rows), schema=pa.schema(BASE_COLUMNS))


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
    if not uris:
        from engine.errors import UserError

        raise UserError(f"no videos in '{inputs}' (looked for {', '.join(VIDEO_EXTENSIONS[:4])}, ...); give a folder "
                        "of videos, a glob, a .txt list of URIs or one video")
    videos = ingest(uris)
    done = manifest.completed_videos()
    todo = videos.filter(pa.array([v not in done for v in videos.column("video_id").to_pylist()]))
    log.info("%d inputs, %d already finished, %d to process", videos.num_rows, videos.num_rows - todo.num_rows,
             todo.num_rows)
    ctx = RunContext(output=output, on_error=on_error)
    split_at = pipeline.fan_out_index
    video_stages = tuple(s.name for s in pipeline.stages[:split_at]) if split_at is not None else ()
    video_table, clips, stage_seconds = run_segments(pipeline, todo, ctx, executor, manifest, video_stages)
    for stage in pipeline.stages:
        if stage.finalizes and not stage.barrier:  # a barrier's finalize ran between the stages
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
    n_clip_error = int(pc.sum(pc.equal(clips.column("status"), ERROR).cast(pa.int64())).as_py() or 0) \
        if clips.num_rows else 0
    summary = RunSummary(
        videos=video_table.num_rows, videos_ok=video_table.num_rows - n_error, videos_error=n_error,
        clips_error=n_clip_error, skipped=videos.num_rows - todo.num_rows, clips=clips.num_rows, kept=kept,
        seconds=time.time() - started, stage_seconds=stage_seconds,
        errors_by_cause=error_counts([video_table, clips], "cause"),
        errors_by_kind=error_counts([video_table, clips], "kind"), output=output,
        **_shot_drops(video_table, clips),
    )
    _write_run_file(manifest, pipeline, inputs, executor, summary, started)
    return summary


def _shot_drops(videos: pa.Table, clips: pa.Table) -> dict:
    """How many split videos and shots gave no clip, and why (the split's shots_no_clip_* columns)."""
    reasons = [c for c in videos.column_names if c.startswith("shots_no_clip_")]
    if not reasons:
        return {}
    split = pc.and_(pc.equal(videos.column("status"), OK), pc.is_valid(videos.column(reasons[0])))
    with_clips = set()
    if "clip_id" in clips.column_names and clips.num_rows:
        with_clips = set(clips.filter(pc.is_valid(clips.column("clip_id"))).column("video_id").to_pylist())
    ids = videos.filter(split).column("video_id").to_pylist()
    return {"videos_without_clips": sum(v not in with_clips for v in ids),
            "shots_no_clip": {c.removeprefix("shots_no_clip_"): int(pc.sum(videos.column(c)).as_py() or 0)
                              for c in reasons}}


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
        # what stages declare about their columns and thresholds (the dashboard reads its threshold lines here)
        "declarations": {str(i): s.declares() for i, s in enumerate(pipeline.stages) if hasattr(s, "declares")},
        "inputs": inputs,
        "executor": executor.name,
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "finished": datetime.now(timezone.utc).isoformat(),
        "versions": versions(),
        "summary": asdict(summary),
        "history": history[-20:],
    })

"""Everything the report shows, computed from a run's output root with pyarrow + numpy.

One projected read of ``manifest/clips`` (only the columns the report uses: no scene-cut lists, no
embeddings) and one of ``manifest/videos``; every count, histogram and category split is a vectorised Arrow
or numpy operation, so a 1M-clip manifest aggregates in seconds. The gallery is a seeded sample of row
indices, so re-running the report gives the same page.

Threshold lines: a stage that declares its thresholds in ``run.json`` (``declarations``: the filter's
``key -> {column, op}`` from the scorers' declarations) is drawn on exactly the column it tests. For other
stages' keys (and runs recorded before declarations) a convention: every stage's config is scanned for keys
``min_X`` / ``max_X`` with a numeric value (and for nested ``X: {min: .., max: ..}``); a stage class may
declare ``threshold_columns: ClassVar[dict[str, str]]`` (config key -> column), which wins. Otherwise ``X``
maps to the first clip column that exists among ``X``, ``X_min`` for ``min_X`` / ``X_max`` for ``max_X``,
``X_score``, ``X_mean``, the other of ``X_min``/``X_max``, ``clip_X``, then any column that starts with
``X_`` (alphabetically first); ``clip_s`` and ``duration_s`` mean ``clip_duration_s``, ``side`` the short
side; ``max_X: 0`` there means "no limit" and draws nothing. Lines from a stage that writes ``keep`` (or is
named ``*filter*``) shade the side it drops; other stages' limits are plain lines. Keys that match no column
are listed in the run section.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from engine.io import join, output_fs

log = logging.getLogger(__name__)

# Columns the engine itself writes (ingest, probe, split, write_clips): metadata, never "scores". Every
# other numeric clip column (whatever the scorers add) gets a histogram.
ENGINE_COLUMNS = frozenset({
    "uri", "video_id", "bytes", "status", "error", "error_stage", "error_kind", "error_cause", "duration_s", "fps", "nominal_fps", "frames", "width", "height",
    "display_width", "display_height", "rotation", "sar", "codec", "pix_fmt", "container_start_s", "vfr",
    "has_alpha", "video_streams", "audio_streams", "frames_decoded", "scene_cuts", "gradual_transitions",
    "decode_warning", "clip_id", "start_frame", "end_frame", "start_s", "end_s", "clip_frames", "clip_duration_s",
    "shot_index", "chunk_index", "clips_in_video", "clip_uri", "clip_bytes", "clip_written_by", "keep",
    "drop_reason", "caption", "category",
})
# Scores the paper's filter lists come first, in this order; the rest follow alphabetically.
SCORE_ORDER = ("motion", "aesthetic", "text_area", "clarity", "consistency")
# Numeric columns scorers add that are bookkeeping or geometry, not quality: no histogram. Numeric columns of the
# caption stages (caption_*, category_*, dsg_*) are charted with the captions, not with the scores.
NOT_SCORES = frozenset({"crop_x", "crop_y", "crop_w", "crop_h", "score_frames", "caption_frames", "duplicate_cosine"})
CAPTION_PREFIXES = ("caption_", "category_", "dsg_")
# Numeric columns that describe how a clip was sampled, not how good it is: charted apart, collapsed.
BOOKKEEPING = frozenset({"frame_stride", "num_frames", "sample_start_frame", "clip_frames_scored", "aspect_ratio",
                         "text_tokens"})
# Clip columns the report reads besides the scores (absent ones are skipped).
META_COLUMNS = ("clip_id", "video_id", "uri", "status", "error", "error_stage", "error_cause", "start_frame", "end_frame", "start_s", "end_s",
                "clip_frames", "clip_duration_s", "fps", "display_width", "display_height", "width", "height",
                "codec", "clip_uri", "keep", "drop_reason", "duplicate_of", "caption", "category", "camera_move")
VIDEO_COLUMNS = ("uri", "video_id", "status", "error", "error_stage", "error_cause", "duration_s", "fps", "codec",
                 "clips_in_video", "bytes")
THRESHOLD_ALIASES = {"clip_s": "clip_duration_s", "duration_s": "clip_duration_s", "clip_duration": "clip_duration_s",
                     "side": "short_side", "short_side": "short_side"}
VIRTUAL_COLUMNS = ("short_side",)  # computed by the report (min of display width and height)
BINS = 30
# A number standing alone in an error cause ("frame 17"; not "x264"): causes differing only in these are one group.
NUMBER = re.compile(r"\b\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
UNTRAINED_PREFIX = "[untrained model]"
# The clip's value in a filter's drop reason ("motion_score 0.03 < min_motion 0.3", "camera_move pan not in
# camera_moves [static]"; "... missing (min_motion 0.3)" has none): RE2 syntax, as pyarrow's regex functions need, and valid for Python's re too.
RULE_VALUE = re.compile(r"^(\S+) \S+ (<|>|!=|not in) ")


@dataclass(kw_only=True, slots=True)
class Threshold:
    column: str  # clip column the line is drawn on
    op: str  # "min" (clips below are dropped) | "max"
    value: float
    source: str  # "filter.min_motion": the stage and key it came from
    drops: bool = True  # from a filter stage (clips past it are dropped), else a limit of another stage


@dataclass(kw_only=True, slots=True)
class Histogram:
    column: str
    title: str
    edges: list[float]
    kept: list[int]  # per bin; all clips when there is no keep column
    dropped: list[int]
    missing: int  # null or NaN values (not plotted)
    stats: dict[str, float]
    thresholds: list[Threshold] = field(default_factory=list)
    integer: bool = False  # one bin per whole number
    clipped: bool = False  # range cut at p0.5/p99.5: values beyond are counted in the end bins


@dataclass(kw_only=True, slots=True)
class Bars:
    title: str
    labels: list[str]
    kept: list[int]
    dropped: list[int]
    other: int = 0  # items beyond the top-N shown


@dataclass(kw_only=True)
class ReportData:
    output: str
    run: dict | None
    funnel: list[dict]  # [{"key", "label", "count", "note"}], in pipeline order
    has_keep: bool
    kpis: dict[str, Any]
    reasons: list[dict]  # [{"reason", "count", "sole"}]
    clip_hists: list[Histogram]
    score_hists: list[Histogram]  # quality scores
    bookkeeping_hists: list[Histogram]  # micro-conditions, sampling geometry and columns constant in this run
    video_hists: list[Histogram]
    bars: dict[str, Bars]
    caption_hist: Histogram | None
    caption_hists: list[Histogram]  # numeric columns of the caption stages (caption_tokens, dsg_objects, ...)
    thresholds: list[Threshold]
    unmatched_thresholds: list[dict]
    video_errors: list[dict]
    clip_errors: list[dict]
    score_columns: list[str]
    gallery_rows: list[dict]
    extras: dict[str, Any]  # dsg_video.json, categories.json, shards/index.json when present
    untrained: bool
    whatif: dict | None = None  # sliders + per-clip values for the page's threshold what-if (dashboard.whatif)
    scatter: dict | None = None  # a sample of clips' scores for the page's scatter


# -- reading ------------------------------------------------------------------------------------------------

def _dataset(fs, folder: str) -> ds.Dataset | None:
    if not fs.exists(folder):
        return None
    paths = sorted(p for p in fs.ls(folder, detail=False) if p.endswith(".parquet") and "/.tmp-" not in p)
    if not paths:
        return None
    if type(fs).__name__ == "LocalFileSystem":
        return ds.dataset(paths, format="parquet")  # pyarrow's own local reader: the fast path
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return ds.dataset(paths, format="parquet", filesystem=PyFileSystem(FSSpecHandler(fs)))


def _read(dataset: ds.Dataset | None, wanted: list[str]) -> pa.Table | None:
    if dataset is None:
        return None
    columns = [c for c in wanted if c in dataset.schema.names]
    return dataset.to_table(columns=columns)


def read_json(fs, path: str) -> dict | None:
    if not fs.exists(path):
        return None
    try:
        with fs.open(path, "r") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s): left out of the report", path, exc)
        return None


def numeric_columns(schema: pa.Schema) -> list[str]:
    """Numeric clip columns that are not engine metadata: whatever the scorers and captioners added."""
    return [f.name for f in schema if f.name not in ENGINE_COLUMNS and f.name not in NOT_SCORES
            and not f.name.startswith("_") and (pa.types.is_floating(f.type) or pa.types.is_integer(f.type))]


def is_bookkeeping(h: Histogram) -> bool:
    """Micro-conditions and sampling geometry (what encode records), or a column with one value in this run,
    unless a threshold acts on it."""
    if h.thresholds:
        return False
    constant = bool(h.stats) and h.stats["min"] == h.stats["max"]
    return h.column in BOOKKEEPING or h.column.startswith(("crop_", "orig_")) or constant


def score_columns(schema: pa.Schema) -> list[str]:
    """The quality scores among ``numeric_columns``: the paper's five first, the rest alphabetically."""
    found = [c for c in numeric_columns(schema) if not c.startswith(CAPTION_PREFIXES)]

    def rank(name: str) -> tuple[int, str]:
        for i, prefix in enumerate(SCORE_ORDER):
            if name == prefix or name.startswith(prefix + "_"):
                return i, name
        return len(SCORE_ORDER), name

    return sorted(found, key=rank)


# -- thresholds ---------------------------------------------------------------------------------------------

def _resolve(name: str, op: str, columns: list[str]) -> str | None:
    """The column ``min_X``/``max_X`` acts on: ``X``; ``X_min``/``X_max`` (the key's own words reversed:
    ``max_text_area`` -> ``text_area_max``); ``X_score``; ``X_mean``; the other of min/max; ``clip_X``; then the
    alphabetically first column starting with ``X_``."""
    name = THRESHOLD_ALIASES.get(name, name)
    other = "max" if op == "min" else "min"
    for cand in (name, f"{name}_{op}", f"{name}_score", f"{name}_mean", f"{name}_{other}", f"clip_{name}"):
        if cand in columns:
            return cand
    prefixed = sorted(c for c in columns if c.startswith(name + "_"))
    return prefixed[0] if prefixed else None


@functools.lru_cache(maxsize=64)
def _stage_declares(stage_name: str) -> tuple[bool, tuple[tuple[str, str], ...]]:
    """What the stage's class says, when it can be imported: whether it writes ``keep`` (its thresholds drop
    clips) and its optional ``threshold_columns`` ClassVar (config key -> clip column), which overrides the
    naming convention."""
    try:
        from engine.registry import stage_class

        cls = stage_class(stage_name)
    except Exception:  # noqa: BLE001 - unknown or unimportable stage: fall back to the name
        return "filter" in stage_name, ()
    mapping = getattr(cls, "threshold_columns", None) or {}
    return "keep" in getattr(cls, "adds", {}) or "filter" in stage_name, tuple(sorted(mapping.items()))


def thresholds(run: dict | None, columns: list[str]) -> tuple[list[Threshold], list[dict]]:
    """Threshold lines from every stage's config (see the module docstring for the key convention)."""
    found: list[Threshold] = []
    unmatched: list[dict] = []
    recorded = (run or {}).get("declarations") or {}
    for index, stage in enumerate((run or {}).get("pipeline", {}).get("stages", [])):
        stage_name = str(stage.get("stage", "?"))
        rules = (recorded.get(str(index)) or {}).get("thresholds") or {}
        items: list[tuple[str, str, Any, str]] = []
        for key, value in stage.items():
            m = re.fullmatch(r"(min|max)_(.+)", str(key))
            if m:
                items.append((m.group(1), m.group(2), value, key))
            elif isinstance(value, dict):
                for op in ("min", "max"):
                    if op in value:
                        items.append((op, str(key), value[op], f"{key}.{op}"))
        drops, declared = _stage_declares(stage_name) if items else (False, ())
        declared = dict(declared)
        for op, name, value, key in items:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            if key in rules:  # the stage said which column the rule tests: no guessing
                column = rules[key]["column"] if rules[key]["column"] in columns else None
            elif op == "max" and value == 0:  # the house convention: 0 disables a limit
                continue
            else:
                column = declared.get(key) if declared.get(key) in columns else _resolve(name, op, columns)
            if column is None:
                unmatched.append({"stage": stage_name, "key": key, "value": value})
                continue
            found.append(Threshold(column=column, op=op, value=float(value), source=f"{stage_name}.{key}",
                                   drops=drops))
    return found, unmatched


# -- aggregation helpers --------------------------------------------------------------------------------------

def _finite(values: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Values as float64 with a mask of the finite ones (null and NaN are not)."""
    arr = pc.fill_null(pc.cast(values, pa.float64()), float("nan")).to_numpy()
    return arr, np.isfinite(arr)


def _bin_edges(lo: float, hi: float, integer: bool) -> tuple[np.ndarray, bool]:
    if integer and hi - lo <= BINS:
        return np.arange(math.floor(lo) - 0.5, math.ceil(hi) + 1.5, 1.0), True
    if hi <= lo:
        pad = abs(lo) * 0.05 or 0.5
        return np.linspace(lo - pad, hi + pad, 3), False
    return np.linspace(lo, hi, BINS + 1), False


def histogram(column: str, title: str, values: np.ndarray, ok: np.ndarray, kept: np.ndarray,
              lines: list[Threshold], integer: bool = False) -> Histogram:
    """Histogram of ``values[ok]`` split into kept/dropped; the range always shows every threshold line.

    A long tail (range over 3x the p0.5-p99.5 spread) is cut at those percentiles and its values counted in
    the end bins (``clipped``), so one outlier cannot squash the shape into a single bar."""
    good = ok & np.isfinite(values)
    v = values[good]
    k = kept[good]
    missing = int(ok.sum() - good.sum())
    if v.size == 0:
        return Histogram(column=column, title=title, edges=[], kept=[], dropped=[], missing=missing, stats={},
                         thresholds=lines, integer=integer)
    lo, hi = float(v.min()), float(v.max())
    q = np.percentile(v, [0.5, 5, 50, 95, 99.5])
    clipped = False
    if hi - lo > 3 * (q[4] - q[0]) > 0:
        lo, hi, clipped = float(q[0]), float(q[4]), True
    for t in lines:
        lo, hi = min(lo, t.value), max(hi, t.value)
    integer = integer or (hi - lo <= BINS and bool(np.all(v == np.round(v))))
    edges, integer = _bin_edges(lo, hi, integer)
    if lines and not integer and edges.size > 3:
        # Shift the bins so that a threshold falls on an edge: no bar straddles the line, the shaded side holds
        # exactly the clips that rule drops.
        anchor = next((t.value for t in lines if t.drops), lines[0].value)
        width = edges[1] - edges[0]
        start = anchor - math.ceil((anchor - lo) / width - 1e-9) * width
        edges = start + width * np.arange(int(math.ceil((hi - start) / width - 1e-9)) + 1)
        edges = edges if edges[-1] >= hi else np.append(edges, edges[-1] + width)
    placed = np.clip(v, edges[0], edges[-1]) if clipped else v
    kept_counts, _ = np.histogram(placed[k], bins=edges)
    dropped_counts, _ = np.histogram(placed[~k], bins=edges)
    stats = {"n": int(v.size), "mean": float(v.mean()), "p5": float(q[1]), "median": float(q[2]), "p95": float(q[3]),
             "min": float(v.min()), "max": float(v.max())}
    return Histogram(column=column, title=title, edges=[float(e) for e in edges], kept=kept_counts.tolist(),
                     dropped=dropped_counts.tolist(), missing=missing, stats=stats, thresholds=lines,
                     integer=integer, clipped=clipped)


def bars(title: str, labels: pa.Array | pa.ChunkedArray, kept: np.ndarray, top: int = 15) -> Bars:
    """Counts per label (nulls left out), most frequent first, split into kept/dropped."""
    labels = pc.cast(labels, pa.string())
    if isinstance(labels, pa.ChunkedArray):
        labels = labels.combine_chunks()
    valid = pc.is_valid(labels).to_numpy(zero_copy_only=False)
    encoded = pc.dictionary_encode(labels)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    names = encoded.dictionary.to_pylist()
    if not len(names):
        return Bars(title=title, labels=[], kept=[], dropped=[])
    codes = np.where(valid, codes, 0).astype(np.int64)
    k = np.bincount(codes[valid & kept], minlength=len(names))
    d = np.bincount(codes[valid & ~kept], minlength=len(names))
    order = sorted(range(len(names)), key=lambda i: (-(k[i] + d[i]), str(names[i])))
    order = [i for i in order if k[i] + d[i] > 0]
    shown = order[:top]
    other = int(sum(k[i] + d[i] for i in order[top:]))
    return Bars(title=title, labels=[str(names[i]) for i in shown], kept=[int(k[i]) for i in shown],
                dropped=[int(d[i]) for i in shown], other=other)


def rule_of(reason: str) -> str:
    """A drop reason without the clip's own value: ``motion_score 0.03 < min_motion 0.3`` ->
    ``motion_score < min_motion 0.3``, so clips group by the rule that dropped them."""
    return RULE_VALUE.sub(r"\1 \2 ", reason.strip())


def drop_reasons(reasons: pa.ChunkedArray, dropped: np.ndarray) -> list[dict]:
    """Clips per rule that dropped them (a clip failing several counts under each) and per sole rule."""
    col = pc.filter(reasons, pa.array(dropped)) if len(reasons) else reasons
    col = pc.cast(col, pa.string())
    split = pc.split_pattern(pc.fill_null(col, ""), ";")
    flat = pc.utf8_trim_whitespace(pc.list_flatten(split))
    # dedup names the kept clip in each reason: one bar for all of them
    flat = pc.replace_substring_regex(flat, r"^duplicate of \S+ \(cosine [0-9.]+\)$", "duplicate (dedup)")
    flat = pc.replace_substring_regex(flat, RULE_VALUE.pattern, r"\1 \2 ")
    lengths = pc.list_value_length(split).to_numpy(zero_copy_only=False)
    sole = pc.filter(flat, pa.array(np.repeat(lengths == 1, lengths)))
    counts = {r["values"]: r["counts"] for r in pc.value_counts(flat).to_pylist()}
    sole_counts = {r["values"]: r["counts"] for r in pc.value_counts(sole).to_pylist()}
    unknown = counts.pop("", 0)
    sole_counts.pop("", None)
    rows = [{"reason": r, "count": int(c), "sole": int(sole_counts.get(r, 0))}
            for r, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    if unknown:
        rows.append({"reason": "(no reason given)", "count": int(unknown), "sole": int(unknown)})
    return rows


def errors(table: pa.Table) -> list[dict]:
    """Error rows grouped by cause (the ``error_stage`` / ``error_cause`` columns), with the files. Causes that differ
    only in their numbers ("failed at frame 17", "... 33") are one group, shown with the words of its first error,
    never with masked digits."""
    if table is None or "status" not in table.column_names:
        return []
    bad = table.filter(pc.equal(table.column("status"), "error"))
    groups: dict[str, dict] = {}
    def col(name: str) -> list:
        return bad.column(name).to_pylist() if name in bad.column_names else [None] * bad.num_rows

    for uri, message, clip_id, stage, cause in zip(col("uri"), col("error"), col("clip_id"), col("error_stage"),
                                                   col("error_cause")):
        stage, cause = stage or "", cause or message or "(no message)"
        key = NUMBER.sub("#", cause.split(" (")[0])  # "failed at frame 17" and "... 33" are one cause
        group = groups.setdefault(key, {"cause": cause, "stage": stage, "count": 0, "files": [], "variants": set()})
        group["count"] += 1
        group["variants"].add(cause)
        if len(group["files"]) < 200:
            group["files"].append({"file": (uri or "").rsplit("/", 1)[-1], "uri": uri, "clip_id": clip_id,
                                   "message": cause})
    for group in groups.values():
        group["variants"] = len(group["variants"])
    return sorted(groups.values(), key=lambda g: (-g["count"], g["cause"]))


def human_bytes(size: float) -> str:
    """1234 -> '1.2 kB', 5.3e9 -> '5.3 GB' (decimal units, as disks are sold)."""
    for unit, div in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= div:
            return f"{size / div:.3g} {unit}"
    return f"{int(size)} B"


LABELS = {  # columns whose generic title would read badly
    "caption_tokens": "Caption length (tokens)", "dsg_objects": "DSG-Video: items per caption",
    "dsg_hallucinated": "DSG-Video: hallucinated items per caption",
    "dsg_sentences": "DSG-Video: sentences per caption",
    "dsg_sentences_hallucinated": "DSG-Video: sentences with a hallucination",
}


def pretty(column: str) -> str:
    """``motion_mean`` -> ``Motion (mean)``, ``text_area_max`` -> ``Text area (max)``."""
    if column in LABELS:
        return LABELS[column]
    base, _, stat = column.rpartition("_")
    if stat in ("mean", "max", "min", "median", "std", "score") and base:
        return f"{base.replace('_', ' ').capitalize()} ({stat})"
    return column.replace("_", " ").capitalize()


# -- the whole report ---------------------------------------------------------------------------------------

def _mask(table: pa.Table, column: str, value: str) -> np.ndarray:
    if column not in table.column_names:
        return np.ones(table.num_rows, bool)
    return pc.fill_null(pc.equal(table.column(column), value), False).to_numpy(zero_copy_only=False)


def _sizes(table: pa.Table) -> tuple[pa.ChunkedArray, pa.ChunkedArray] | None:
    for w, h in (("display_width", "display_height"), ("width", "height")):
        if w in table.column_names and h in table.column_names:
            return table.column(w), table.column(h)
    return None


def _empty_clips() -> pa.Table:
    return pa.table({"clip_id": pa.array([], pa.string()), "status": pa.array([], pa.string())})


def collect(output: str, gallery: int = 96, seed: int = 0) -> ReportData:
    """Read a run's output root (local path or fsspec URL) and aggregate everything the page shows."""
    fs, root = output_fs(output)
    run = read_json(fs, join(root, "run.json"))
    clips_ds = _dataset(fs, join(root, "manifest", "clips"))
    videos_ds = _dataset(fs, join(root, "manifest", "videos"))
    if clips_ds is None and videos_ds is None:
        raise FileNotFoundError(f"{output} holds no manifest (manifest/videos/*.parquet, manifest/clips/*.parquet): "
                                f"pass the output root of a finished `vde run` or `vde demo`")
    scores = score_columns(clips_ds.schema) if clips_ds is not None else []
    caption_numeric = [c for c in numeric_columns(clips_ds.schema) if c.startswith(CAPTION_PREFIXES)] \
        if clips_ds is not None else []
    flags = [n for n in (clips_ds.schema.names if clips_ds is not None else []) if "untrained" in n]
    from dashboard import whatif

    rule_columns = whatif.rule_columns(run)
    clips = _read(clips_ds, list(dict.fromkeys([*META_COLUMNS, *scores, *caption_numeric, *flags, *rule_columns])))
    if clips is None:
        clips = _empty_clips()
    videos = _read(videos_ds, list(VIDEO_COLUMNS))
    cols = clips.column_names
    n = clips.num_rows

    ok = _mask(clips, "status", "ok")
    has_keep = "keep" in cols
    kept = ok & (pc.fill_null(clips.column("keep"), True).to_numpy(zero_copy_only=False) if has_keep else True)
    dropped = ok & ~kept
    lines, unmatched = thresholds(run, [*cols, *VIRTUAL_COLUMNS])

    def lines_for(column: str) -> list[Threshold]:
        return [t for t in lines if t.column == column]

    # -- funnel and headline numbers
    extras = {"dsg_video": read_json(fs, join(root, "dsg_video.json")),
              "categories": read_json(fs, join(root, "categories.json")),
              "shards": read_json(fs, join(root, "shards", "index.json"))}
    n_videos = videos.num_rows if videos is not None else int(pc.count_distinct(clips.column("video_id")).as_py()) \
        if "video_id" in cols else 0
    videos_ok = int(_mask(videos, "status", "ok").sum()) if videos is not None else n_videos
    with_clips = int(pc.count_distinct(pc.filter(clips.column("video_id"), pa.array(ok))).as_py()) \
        if "video_id" in cols and n else 0
    clip_errors_n = int(n - ok.sum())
    funnel = [
        {"key": "videos", "label": "Input videos", "count": n_videos, "note": ""},
        {"key": "videos_ok", "label": "Videos decoded", "count": videos_ok,
         "note": f"{n_videos - videos_ok:,} unreadable" if n_videos - videos_ok else ""},
        {"key": "videos_with_clips", "label": "Videos with clips", "count": with_clips,
         "note": f"{videos_ok - with_clips:,} gave no clip" if videos_ok > with_clips else ""},
        {"key": "clips", "label": "Clips", "count": n, "note": ""},
    ]
    if clip_errors_n:
        funnel.append({"key": "clips_ok", "label": "Clips scored" if scores else "Clips without error",
                       "count": int(ok.sum()),
                       "note": f"{clip_errors_n:,} failed"})
    duplicates = ok & pc.is_valid(clips.column("duplicate_of")).to_numpy(zero_copy_only=False) \
        if "duplicate_of" in cols and n else np.zeros(n, bool)
    if has_keep and duplicates.any():  # the dedup stage: clips that passed every threshold, then the unique ones
        funnel.append({"key": "passed_filters", "label": "Passed filters", "count": int((kept | duplicates).sum()),
                       "note": f"{int((dropped & ~duplicates).sum()):,} dropped"})
        funnel.append({"key": "kept", "label": "Kept", "count": int(kept.sum()),
                       "note": f"{int(duplicates.sum()):,} duplicates removed"})
    elif has_keep:
        funnel.append({"key": "kept", "label": "Kept", "count": int(kept.sum()),
                       "note": f"{int(dropped.sum()):,} dropped"})
    shard_list = (extras["shards"] or {}).get("shards")
    bar_charts: dict[str, Bars] = {}
    if isinstance(shard_list, list):  # shards/index.json: [{"path", "bucket", "count", "bytes", ...}]
        shard_list = [s for s in shard_list if isinstance(s, dict)]
        count = sum(int(s.get("count", 0) or 0) for s in shard_list)
        size = sum(int(s.get("bytes", 0) or 0) for s in shard_list)
        funnel.append({"key": "sharded", "label": "In shards", "count": count,
                       "note": f"{len(shard_list):,} shards, {human_bytes(size)}"})
        per_bucket: dict[str, int] = {}
        for s in shard_list:
            bucket = str(s.get("bucket", "?"))
            per_bucket[bucket] = per_bucket.get(bucket, 0) + int(s.get("count", 0) or 0)
        order = sorted(per_bucket, key=lambda b: (-per_bucket[b], b))
        bar_charts["buckets"] = Bars(title="Samples per shard bucket", labels=order,
                                     kept=[per_bucket[b] for b in order], dropped=[0] * len(order))

    duration = _finite(clips.column("clip_duration_s"))[0] if "clip_duration_s" in cols else np.zeros(n)
    duration = np.nan_to_num(duration)
    kpis = {"videos": n_videos, "clips": n, "kept": int(kept.sum()), "dropped": int(dropped.sum()),
            "kept_pct": float(100.0 * kept.sum() / max(int(ok.sum()), 1)),
            "hours": float(duration[ok].sum() / 3600), "kept_hours": float(duration[kept].sum() / 3600),
            "mean_clip_s": float(duration[ok].mean()) if ok.any() else float("nan"),
            "errors": (n_videos - videos_ok) + clip_errors_n}

    # -- distributions
    clip_hists: list[Histogram] = []
    if "clip_duration_s" in cols:
        clip_hists.append(histogram("clip_duration_s", "Clip duration (s)", duration, ok, kept,
                                    lines_for("clip_duration_s")))
    sizes = _sizes(clips)
    if sizes is not None and n:
        w, h = sizes
        res = pc.binary_join_element_wise(pc.cast(w, pa.string()), pc.cast(h, pa.string()), "×")
        bar_charts["resolution"] = bars("Resolution (display)", pc.filter(res, pa.array(ok)), kept[ok], top=12)
        wn = pc.fill_null(w, 0).to_numpy(zero_copy_only=False)
        hn = pc.fill_null(h, 0).to_numpy(zero_copy_only=False)
        code = np.where(wn > hn, 0, np.where(wn < hn, 1, 2)).astype(np.int32)
        orient = pa.DictionaryArray.from_arrays(pa.array(code), pa.array(["landscape", "portrait", "square"]))
        bar_charts["orientation"] = bars("Orientation", orient.filter(pa.array(ok)), kept[ok])
        short = np.minimum(wn, hn).astype(np.float64)
        clip_hists.append(histogram("short_side", "Short side (px)", short, ok & (short > 0), kept,
                                    lines_for("short_side")))
    if "fps" in cols and n:
        fps = _finite(clips.column("fps"))[0]
        rounded = np.round(fps, 2)
        distinct = np.unique(rounded[ok & np.isfinite(rounded)])
        if 0 < distinct.size <= 12:
            labels = pa.array([f"{v:g} fps" if math.isfinite(v) else None for v in rounded.tolist()]) \
                if n <= 200_000 else pc.binary_join_element_wise(
                    pc.cast(pc.round(clips.column("fps"), 2), pa.string()), " fps", "")
            bar_charts["fps"] = bars("Frame rate", pc.filter(labels, pa.array(ok)), kept[ok])
        else:
            clip_hists.append(histogram("fps", "Frame rate (fps)", fps, ok, kept, lines_for("fps")))
    charted = {"clip_duration_s", "fps", "short_side", *scores}
    for column in sorted({t.column for t in lines} - charted):
        if column in cols and (pa.types.is_integer(clips.schema.field(column).type)
                               or pa.types.is_floating(clips.schema.field(column).type)):
            clip_hists.append(histogram(column, pretty(column), _finite(clips.column(column))[0], ok, kept,
                                        lines_for(column), pa.types.is_integer(clips.schema.field(column).type)))
    all_score_hists = [histogram(c, pretty(c), _finite(clips.column(c))[0], ok, kept, lines_for(c),
                                 pa.types.is_integer(clips.schema.field(c).type)) for c in scores]
    score_hists = [h for h in all_score_hists if not is_bookkeeping(h)]
    bookkeeping_hists = [h for h in all_score_hists if is_bookkeeping(h)]

    video_hists: list[Histogram] = []
    if videos is not None and videos.num_rows:
        vok = _mask(videos, "status", "ok")
        everything = np.ones(videos.num_rows, bool)
        if "duration_s" in videos.column_names:
            video_hists.append(histogram("duration_s", "Source video duration (s)",
                                         _finite(videos.column("duration_s"))[0], vok, everything, []))
        if "clips_in_video" in videos.column_names:
            video_hists.append(histogram("clips_in_video", "Clips per video",
                                         _finite(videos.column("clips_in_video"))[0], vok, everything, [], True))
        if "codec" in videos.column_names:
            bar_charts["codec"] = bars("Source codec", pc.filter(videos.column("codec"), pa.array(vok)),
                                       everything[vok])

    # -- captions and categories
    untrained = any(bool(pc.any(pc.fill_null(clips.column(f), False)).as_py()) for f in flags
                    if pa.types.is_boolean(clips.schema.field(f).type))
    caption_hist = None
    if "caption" in cols and n:
        caps = pc.cast(clips.column("caption"), pa.string())
        has = pc.is_valid(caps).to_numpy(zero_copy_only=False)
        if has.any():
            untrained = untrained or bool(pc.any(pc.starts_with(pc.fill_null(caps, ""), UNTRAINED_PREFIX)).as_py())
            stripped = pc.utf8_trim_whitespace(pc.replace_substring(pc.fill_null(caps, ""), UNTRAINED_PREFIX, ""))
            words = pc.list_value_length(pc.utf8_split_whitespace(stripped)).to_numpy(zero_copy_only=False)
            words = np.where(pc.utf8_length(stripped).to_numpy(zero_copy_only=False) == 0, 0, words)  # "" -> [""]
            caption_hist = histogram("caption_words", "Caption length (words)", words.astype(np.float64),
                                     has & ok, kept, [], True)
    if "camera_move" in cols and n:  # the score stage's camera class (filters/scorers/camera.py)
        bar_charts["camera_move"] = bars("Camera move", pc.filter(clips.column("camera_move"), pa.array(ok)), kept[ok])
    if "category" in cols and n:
        bar_charts["category"] = bars("Category", pc.filter(clips.column("category"), pa.array(ok)), kept[ok], top=20)
    counts = (extras["categories"] or {}).get("counts")
    if "category" not in bar_charts and isinstance(counts, dict) and counts:  # only categories.json is there
        order = sorted(counts, key=lambda c: (-int(counts[c] or 0), c))
        bar_charts["category"] = Bars(title="Category", labels=order, kept=[int(counts[c] or 0) for c in order],
                                      dropped=[0] * len(order))
    caption_hists = [histogram(c, pretty(c), _finite(clips.column(c))[0],
                               ok & pc.is_valid(clips.column(c)).to_numpy(zero_copy_only=False), kept, lines_for(c),
                               pa.types.is_integer(clips.schema.field(c).type)) for c in caption_numeric]
    untrained = untrained or any(bool((extras[k] or {}).get("untrained_model")) for k in ("dsg_video", "categories")
                                 if isinstance(extras[k], dict))

    reasons = drop_reasons(clips.column("drop_reason"), dropped) if has_keep and "drop_reason" in cols else []
    if has_keep and "drop_reason" not in cols and dropped.any():
        reasons = [{"reason": "(no reason given)", "count": int(dropped.sum()), "sole": int(dropped.sum())}]
    rows = _gallery(clips, ok, kept, dropped, scores, gallery, seed)
    return ReportData(output=output, run=run, funnel=funnel, has_keep=has_keep, kpis=kpis, reasons=reasons,
                      clip_hists=clip_hists, score_hists=score_hists, bookkeeping_hists=bookkeeping_hists,
                      video_hists=video_hists, bars=bar_charts,
                      caption_hist=caption_hist, caption_hists=caption_hists, thresholds=lines,
                      unmatched_thresholds=unmatched,
                      video_errors=errors(videos) if videos is not None else [],
                      clip_errors=errors(clips), score_columns=scores, gallery_rows=rows, extras=extras,
                      untrained=untrained, whatif=whatif.whatif(run, clips, ok, kept, seed),
                      scatter=whatif.scatter(clips, ok, kept, [*scores, "clip_duration_s"], seed))


def _gallery(clips: pa.Table, ok: np.ndarray, kept: np.ndarray, dropped: np.ndarray, scores: list[str],
             size: int, seed: int) -> list[dict]:
    """A seeded sample of kept and dropped clips (half each when both exist), plus the lowest and highest
    clip of every score, so the extremes a threshold acts on are always visible."""
    if size <= 0 or not ok.any():
        return []
    rng = np.random.default_rng(seed)
    kept_idx, dropped_idx = np.flatnonzero(kept), np.flatnonzero(dropped)
    n_dropped = min(dropped_idx.size, max(size // 2, size - kept_idx.size))
    n_kept = min(kept_idx.size, size - n_dropped)
    chosen = set(rng.choice(kept_idx, n_kept, replace=False).tolist()) if n_kept else set()
    chosen |= set(rng.choice(dropped_idx, n_dropped, replace=False).tolist()) if n_dropped else set()
    extremes: dict[int, list[str]] = {}
    for column in scores:
        values, finite = _finite(clips.column(column))
        finite &= ok
        if finite.sum() < 3:
            continue
        low = int(np.argmin(np.where(finite, values, np.inf)))  # O(n), no sort of 1M values
        high = int(np.argmax(np.where(finite, values, -np.inf)))
        for i, tag in ((low, f"lowest {column}"), (high, f"highest {column}")):
            extremes.setdefault(int(i), []).append(tag)
    chosen |= set(extremes)
    picked = sorted(chosen)
    table = clips.take(pa.array(picked, pa.int64()))
    rows = []
    for i, row in zip(picked, table.to_pylist()):
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = None
        row["kept"] = bool(kept[i])
        row["tags"] = extremes.get(i, [])
        row["video"] = (row.get("uri") or "").rsplit("/", 1)[-1]
        rows.append(row)
    return rows

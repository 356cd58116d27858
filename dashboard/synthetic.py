"""A synthetic run output with known counts: manifests, run.json, DSG-Video and category files.

For the report's tests (the page must show exactly these counts) and its benchmark (1M clips). Scores are
drawn from plausible distributions, a filter with known thresholds decides ``keep`` and ``drop_reason``,
and a few videos and clips are errors. ``sources`` (real video files) lets the gallery decode previews:
clips then point into them at valid frame ranges.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa

from engine.io import join, output_fs, write_atomic
from engine.manifest import Manifest
from engine.stage import error_fields

FILTER = {"stage": "filter", "min_motion": 0.3, "min_aesthetic": 4.5, "max_text_area": 0.05, "min_clarity": 0.4,
          "min_consistency": 0.7}
RULES = (  # (column, op, threshold key, reason text); column names as filters/score.py writes them
    ("motion_score", "min", "min_motion", "low motion"),
    ("aesthetic_score", "min", "min_aesthetic", "low aesthetic"),
    ("text_area_max", "max", "max_text_area", "too much text"),
    ("clarity", "min", "min_clarity", "blurry"),
    ("consistency", "min", "min_consistency", "inconsistent"),
)
CATEGORIES = ("people", "nature", "city", "animals", "vehicles", "sports", "food", "indoor")
CATEGORY_P = (0.26, 0.18, 0.15, 0.12, 0.1, 0.08, 0.06, 0.05)
VIDEO_ERRORS = (("probe", "cannot open the file (Invalid data found when processing input)"),
                ("probe", "no video stream"), ("split", "no decodable frame"))
CLIP_ERROR = ("score", "decoding failed at frame {frame}")


def _error_columns(errors: list[tuple[str, str, str] | None]) -> dict[str, pa.Array]:
    """The error columns as run_stage writes them, from (stage, uri, cause) or None per row."""
    fields = [error_fields(*e) if e else {} for e in errors]
    return {name: pa.array([f.get(name) for f in fields], pa.string())
            for name in ("error", "error_stage", "error_kind", "error_cause")}
SIZES = ((1920, 1080), (1280, 720), (720, 1280), (1080, 1080), (640, 360), (3840, 2160))
FPS = (24.0, 25.0, 30.0, 29.97, 60.0)
WORDS = ("a", "the", "slowly", "bright", "red", "small", "walks", "across", "street", "camera", "pans", "over",
         "green", "field", "while", "light", "changes", "people", "talk", "near", "window", "dog", "runs")


def write_synthetic_run(output: str, clips: int = 2000, seed: int = 0, sources: list[dict] | None = None,
                        captions: bool = True) -> dict:
    """Write a run under ``output`` (local path or fsspec URL) and return its ground-truth counts.

    ``sources``: ``[{"uri", "frames", "width", "height", "fps"}]`` real videos the clips point into.
    """
    rng = np.random.default_rng(seed)
    fs, root = output_fs(output)
    n_videos = max(clips // 20, 3)
    n_bad_videos = max(n_videos // 50, 1)
    vid = np.array([f"{i:016x}" for i in range(n_videos)])
    bad = np.zeros(n_videos, bool)
    bad[rng.choice(n_videos, n_bad_videos, replace=False)] = True
    good_ids = np.flatnonzero(~bad)
    owner = np.sort(rng.choice(good_ids[:-1] if good_ids.size > 1 else good_ids, clips))  # last good video: no clip
    n = clips
    if sources:
        src = rng.integers(0, len(sources), n)
        frames_in = np.array([s["frames"] for s in sources])[src]
        uri = np.array([s["uri"] for s in sources], dtype=object)[src]
        length = np.minimum(rng.integers(40, 160, n), frames_in)
        start = (rng.random(n) * (frames_in - length)).astype(np.int32)
        w = np.array([s["width"] for s in sources])[src]
        h = np.array([s["height"] for s in sources])[src]
        fps = np.array([s["fps"] for s in sources], np.float64)[src]
    else:
        uri = np.array([f"/data/videos/v{i:06d}.mp4" for i in range(n_videos)], dtype=object)[owner]
        size = np.array(SIZES)[rng.choice(len(SIZES), n, p=(0.35, 0.3, 0.12, 0.08, 0.1, 0.05))]
        w, h = size[:, 0], size[:, 1]
        fps = np.array(FPS)[rng.choice(len(FPS), n, p=(0.3, 0.2, 0.3, 0.1, 0.1))]
        length = np.round(rng.uniform(2.0, 10.0, n) * fps).astype(np.int32)
        start = rng.integers(0, 5000, n).astype(np.int32)
    end = (start + length).astype(np.int32)
    clip_id = np.char.add(np.char.add(vid[owner].astype(str), "-"),
                          np.char.add(np.char.add(np.char.zfill(start.astype(str), 7), "-"),
                                      np.char.zfill(end.astype(str), 7)))
    scores = {
        "motion_score": rng.lognormal(-0.6, 0.7, n),
        "aesthetic_score": rng.normal(5.2, 0.8, n),
        "text_area_max": rng.beta(0.6, 14, n),
        "clarity": rng.beta(5, 2, n),
        "consistency": rng.beta(9, 1.3, n),
    }
    scores["text_area_mean"] = scores["text_area_max"] * rng.uniform(0.2, 1.0, n)  # max_text_area must not map here
    scores["motion_score"][rng.random(n) < 0.01] = np.nan  # a scorer's NaN: not plotted, counted as missing
    status = np.where(rng.random(n) < 0.005, "error", "ok")
    ok = status == "ok"
    fails = []
    for column, op, key, _ in RULES:
        v = scores[column]
        fails.append(ok & np.isfinite(v) & ((v < FILTER[key]) if op == "min" else (v > FILTER[key])))
    fails = np.stack(fails, 1)
    dropped = fails.any(1)
    keep = np.where(ok, ~dropped, None)
    names = np.array([r[3] for r in RULES], dtype=object)
    reason = [("; ".join(names[f]) if d else None) for f, d in zip(fails, dropped)]
    error = [None if good else (CLIP_ERROR[0], u, CLIP_ERROR[1].format(frame=s)) for good, u, s in zip(ok, uri, start)]
    kept = ok & ~dropped
    # the caption stages skip dropped clips (skips_dropped): only kept clips get a caption and a category
    category = np.where(kept, np.array(CATEGORIES, dtype=object)[rng.choice(len(CATEGORIES), n, p=CATEGORY_P)], None)
    lengths = rng.integers(8, 60, n)
    words = np.array(WORDS, dtype=object)
    caption = [" ".join(words[rng.integers(0, len(words), k)]) if c else None for k, c in zip(lengths, kept)] \
        if captions else None
    table = {
        "uri": pa.array(uri, pa.string()), "video_id": pa.array(vid[owner]), "status": pa.array(status),
        **_error_columns(error), "duration_s": pa.array(end / fps + 5.0),
        "fps": pa.array(fps), "width": pa.array(w, pa.int32()), "height": pa.array(h, pa.int32()),
        "display_width": pa.array(w, pa.int32()), "display_height": pa.array(h, pa.int32()),
        "codec": pa.array(np.full(n, "h264")), "clip_id": pa.array(clip_id), "start_frame": pa.array(start),
        "end_frame": pa.array(end), "start_s": pa.array(start / fps), "end_s": pa.array(end / fps),
        "clip_frames": pa.array(length.astype(np.int32)), "clip_duration_s": pa.array(length / fps),
        **{k: pa.array(v) for k, v in scores.items()},
        "crop_w": pa.array(w, pa.int32()), "score_frames": pa.array(np.full(n, 8, np.int32)),  # not scores
        "keep": pa.array(keep, pa.bool_()), "drop_reason": pa.array(reason, pa.string()),
    }
    dsg = None
    if captions:
        table["caption"] = pa.array(caption, pa.string())
        table["caption_untrained"] = pa.array(np.where(kept, False, None), pa.bool_())
        table["caption_tokens"] = pa.array(np.where(kept, np.round(lengths * 1.3), None), pa.float64())
        table["category"] = pa.array(category, pa.string())
        dsg = _dsg_columns(rng, kept, lengths)
        table.update({k: pa.array(v, pa.int32()) for k, v in dsg.items()})
    manifest = Manifest(output)
    manifest.write_table("clips", pa.table(table))
    clip_counts = np.bincount(owner, minlength=n_videos)
    v_uri = [f"/data/videos/v{i:06d}.mp4" for i in range(n_videos)]
    v_err = [(VIDEO_ERRORS[i % len(VIDEO_ERRORS)][0], u, VIDEO_ERRORS[i % len(VIDEO_ERRORS)][1]) if b else None
             for i, (u, b) in enumerate(zip(v_uri, bad))]
    manifest.write_table("videos", pa.table({
        "uri": pa.array(v_uri), "video_id": pa.array(vid), "status": pa.array(np.where(bad, "error", "ok")),
        **_error_columns(v_err),
        "duration_s": pa.array(np.where(bad, np.nan, rng.uniform(5, 120, n_videos))),
        "fps": pa.array(np.full(n_videos, 30.0)), "codec": pa.array(np.where(bad, None, "h264"), pa.string()),
        "clips_in_video": pa.array(np.where(bad, 0, clip_counts).astype(np.int32)),
    }))
    stages = [{"stage": "probe", "min_side": 16}, {"stage": "split", "min_clip_s": 2.0, "max_clip_s": 10.0},
              {"stage": "score"}, dict(FILTER), {"stage": "caption", "model": "test"}]
    run = {"pipeline": {"name": "synthetic", "source": "synthetic", "text": "name: synthetic\n", "stages": stages},
           "inputs": "/data/videos", "executor": "local", "started": "2026-01-01T00:00:00+00:00",
           "finished": "2026-01-01T00:10:00+00:00", "versions": {"vde": "0.1.0"},
           "summary": {"videos": n_videos, "clips": n, "kept": int((keep == True).sum()),  # noqa: E712
                       "stage_seconds": {"probe": 12.5, "split": 80.2, "score": 310.0, "filter": 0.4,
                                         "caption": 1200.0}, "errors_by_cause": {}}, "history": []}
    fs.makedirs(root, exist_ok=True)
    write_atomic(fs, join(root, "run.json"), json.dumps(run).encode())
    if captions:  # what the caption stages' finalize leaves next to the manifest
        _write_caption_files(fs, root, clip_id, dsg, category, rng)
    n_kept = int(kept.sum())
    buckets = [("256x256x20", n_kept // 2), ("256x448x20", n_kept // 3),
               ("448x256x20", n_kept - n_kept // 2 - n_kept // 3)]
    write_atomic(fs, join(root, "shards", "index.json"), json.dumps({"shards": [
        {"path": f"{b}/{i:06d}.tar", "bucket": b, "count": c, "bytes": c * 250_000, "sha256": "0" * 64}
        for i, (b, c) in enumerate(buckets)]}).encode())
    reasons: Counter = Counter()
    sole: Counter = Counter()
    for f in fails[dropped]:
        hit = names[f]
        reasons.update(hit.tolist())
        if len(hit) == 1:
            sole[hit[0]] += 1
    cats = Counter(category[kept].tolist()) if captions else Counter()
    return {"videos": n_videos, "videos_ok": int((~bad).sum()), "videos_with_clips": int(np.unique(owner[ok]).size),
            "clips": n, "clips_ok": int(ok.sum()), "kept": n_kept, "sharded": n_kept,
            "dropped": int((ok & dropped).sum()), "reasons": dict(reasons), "sole": dict(sole),
            "categories": dict(cats), "video_errors": int(bad.sum()), "clip_errors": int((~ok).sum()),
            "nan_motion": int((ok & np.isnan(scores["motion_score"])).sum()),
            "dsg": _dsg_totals(dsg) if dsg else None}


def _dsg_columns(rng: np.random.Generator, kept: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Per-clip DSG-Video counts (captioners/dsg.py columns) on a 5% sample of kept clips, null elsewhere."""
    sampled = kept & (rng.random(kept.size) < 0.05)
    objects = np.maximum(lengths // 4, 1)
    hallucinated = np.minimum(rng.binomial(objects, 0.06), objects)
    sentences = np.maximum(lengths // 10, 1)
    bad = np.minimum(hallucinated, sentences)
    return {k: np.where(sampled, v, None) for k, v in (("dsg_objects", objects), ("dsg_hallucinated", hallucinated),
                                                        ("dsg_sentences", sentences),
                                                        ("dsg_sentences_hallucinated", bad))}


def _dsg_totals(dsg: dict[str, np.ndarray]) -> dict:
    sampled = np.array([v is not None for v in dsg["dsg_objects"]])
    total = {k: int(sum(v[sampled])) for k, v in dsg.items()}
    return {"captions": int(sampled.sum()), "total_objects": total["dsg_objects"],
            "hallucinated_objects": total["dsg_hallucinated"], "sentences": total["dsg_sentences"],
            "hallucinated_sentences": total["dsg_sentences_hallucinated"],
            "dsg_video_i": total["dsg_hallucinated"] / max(total["dsg_objects"], 1),
            "dsg_video_s": total["dsg_sentences_hallucinated"] / max(total["dsg_sentences"], 1)}


def _write_caption_files(fs, root: str, clip_id: np.ndarray, dsg: dict, category: np.ndarray,
                         rng: np.random.Generator) -> None:
    """``dsg_video.json`` and ``categories.json`` in the shape captioners/dsg.py and categorize.py write."""
    nouns = ("dog", "car", "tree", "person", "window", "street", "field", "sky", "ball", "cup")
    clips = []
    for i in np.flatnonzero([v is not None for v in dsg["dsg_objects"]]):
        n_items, n_bad = int(dsg["dsg_objects"][i]), int(dsg["dsg_hallucinated"][i])
        items = [{"item": nouns[int(rng.integers(0, len(nouns)))], "question": "Is it in the video?",
                  "sentences": [1], "p_yes": [round(float(p), 4) for p in rng.random(4) * (0.3 if k < n_bad else 1)],
                  "hallucinated": k < n_bad} for k in range(n_items)]
        clips.append({"clip_id": str(clip_id[i]), **{k: int(v[i]) for k, v in dsg.items()}, "items": items,
                      "vlm": "test-vlm", "llm": "test-llm"})
    totals = _dsg_totals(dsg)
    write_atomic(fs, join(root, "dsg_video.json"), json.dumps({
        **totals, "unique_objects": len({i["item"] for c in clips for i in c["items"]}), "untrained_model": False,
        "config": {"stage": "dsg_video", "frames": 4, "threshold": 0.5}, "clips": clips}).encode())
    counts = Counter(c for c in category.tolist() if c is not None)
    total = sum(counts.values())
    write_atomic(fs, join(root, "categories.json"), json.dumps({
        "clips": total, "counts": {c: counts.get(c, 0) for c in CATEGORIES},
        "fractions": {c: counts.get(c, 0) / max(total, 1) for c in CATEGORIES},
        "taxonomy": [{"name": c, "description": f"clips mostly about {c}"} for c in CATEGORIES],
        "untrained_model": False}).encode())

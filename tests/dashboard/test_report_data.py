"""The report's numbers against manifests with known counts (no browser): funnel, drop reasons, categories,
errors, threshold mapping, fsspec outputs, idempotence and the CLI."""

from __future__ import annotations

import json
import re

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dashboard.data import Threshold, collect, drop_reasons, histogram, thresholds
from dashboard.report import build_report
from dashboard.synthetic import FILTER, write_synthetic_run


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("synthetic") / "run"
    return str(out), write_synthetic_run(str(out), clips=2000, seed=3)


def test_funnel_reasons_categories_errors_match_ground_truth(synthetic):
    out, gt = synthetic
    data = collect(out, gallery=40)
    funnel = {step["key"]: step["count"] for step in data.funnel}
    assert funnel == {k: gt[k] for k in ("videos", "videos_ok", "videos_with_clips", "clips", "clips_ok", "kept",
                                         "sharded")}
    assert {r["reason"]: r["count"] for r in data.reasons} == gt["reasons"]
    assert {r["reason"]: r["sole"] for r in data.reasons if r["sole"]} == gt["sole"]
    cats = data.bars["category"]
    assert dict(zip(cats.labels, (k + d for k, d in zip(cats.kept, cats.dropped)))) == gt["categories"]
    assert sum(g["count"] for g in data.video_errors) == gt["video_errors"]
    assert sum(g["count"] for g in data.clip_errors) == gt["clip_errors"]
    # "decoding failed at frame 17" and "... 33" are one cause, shown as written (no masked digits), and every
    # file is listed under it
    assert len(data.clip_errors) == 1 and re.fullmatch(r"decoding failed at frame \d+", data.clip_errors[0]["cause"])
    assert data.clip_errors[0]["variants"] == len({f["message"] for f in data.clip_errors[0]["files"]}) > 1
    assert len(data.clip_errors[0]["files"]) == gt["clip_errors"]


def test_score_histograms_count_every_scored_clip_and_draw_the_filter_thresholds(synthetic):
    out, gt = synthetic
    data = collect(out, gallery=0)
    hists = {h.column: h for h in data.score_hists}
    # the paper's five first, then the rest; bookkeeping (crop_w, score_frames) and caption columns are not scores
    assert list(hists) == ["motion_score", "aesthetic_score", "text_area_max", "text_area_mean", "clarity",
                           "consistency"]
    assert [h.column for h in data.caption_hists] == ["caption_tokens", "dsg_objects", "dsg_hallucinated",
                                                      "dsg_sentences", "dsg_sentences_hallucinated"]
    assert sum(next(h for h in data.caption_hists if h.column == "dsg_objects").kept) == gt["dsg"]["captions"]
    motion = hists["motion_score"]
    assert motion.missing == gt["nan_motion"]
    assert sum(motion.kept) + sum(motion.dropped) == gt["clips_ok"] - gt["nan_motion"]
    assert sum(hists["clarity"].kept) == gt["kept"]
    assert [(t.source, t.op, t.value) for t in motion.thresholds] == \
        [("filter.min_motion", "min", FILTER["min_motion"])]
    assert [t.column for t in data.thresholds if t.drops] == ["motion_score", "aesthetic_score", "text_area_max",
                                                             "clarity", "consistency"]
    # every clip under min_aesthetic was dropped: no kept mass left of the line
    aes = hists["aesthetic_score"]
    left = [i for i in range(len(aes.kept)) if aes.edges[i + 1] <= FILTER["min_aesthetic"]]
    assert left and sum(aes.kept[i] for i in left) == 0 and sum(aes.dropped[i] for i in left) > 0


def test_threshold_keys_map_to_columns_by_convention():
    columns = ["motion_mean", "aesthetic_mean", "text_area_mean", "text_area_max", "clarity", "clarity_min",
               "ocr_score", "clip_duration_s", "fps"]
    run = {"pipeline": {"stages": [
        {"stage": "split", "min_clip_s": 2.0, "max_clip_s": 10.0},
        {"stage": "filter", "min_motion": 0.3, "max_text_area": 0.05, "min_clarity": 0.4, "min_ocr": 0.5,
         "aesthetic": {"min": 4.5}, "min_fps": 12, "max_side": 0, "min_sharpness": 0.2, "min_flag": True,
         "mode": "strict"},
    ]}}
    lines, unmatched = thresholds(run, columns)
    got = {t.source: (t.column, t.op, t.value, t.drops) for t in lines}
    assert got == {
        "split.min_clip_s": ("clip_duration_s", "min", 2.0, False),
        "split.max_clip_s": ("clip_duration_s", "max", 10.0, False),
        "filter.min_motion": ("motion_mean", "min", 0.3, True),
        "filter.max_text_area": ("text_area_max", "max", 0.05, True),
        "filter.min_clarity": ("clarity", "min", 0.4, True),
        "filter.min_ocr": ("ocr_score", "min", 0.5, True),
        "filter.aesthetic.min": ("aesthetic_mean", "min", 4.5, True),
        "filter.min_fps": ("fps", "min", 12.0, True),
    }
    assert unmatched == [{"stage": "filter", "key": "min_sharpness", "value": 0.2}]  # max_side 0 = disabled


def test_drop_reasons_are_grouped_by_rule_without_masking_numbers():
    # the filter's own wording: "<column> <the clip's value> <|> <key> <threshold>"
    reasons = pa.chunked_array([pa.array([f"motion_score {i / 100:.2f} < min_motion 0.3" for i in range(60)]
                                         + ["blurry"] * 5 + ["text_area_max 0.2 > max_text_area 0.05"]
                                         + [f"motion_score {i / 100:.2f} < min_motion 0.3; blurry" for i in range(3)]
                                         + ["motion_score missing (min_motion 0.3)"])])
    rows = drop_reasons(reasons, np.ones(len(reasons), bool))
    assert rows == [{"reason": "motion_score < min_motion 0.3", "count": 63, "sole": 60},
                    {"reason": "blurry", "count": 8, "sole": 5},
                    {"reason": "motion_score missing (min_motion 0.3)", "count": 1, "sole": 1},
                    {"reason": "text_area_max > max_text_area 0.05", "count": 1, "sole": 1}]


def test_long_tail_is_cut_at_percentiles_but_nothing_is_lost():
    values = np.concatenate([np.linspace(0, 1, 999), [1000.0]])
    ok = np.ones(values.size, bool)
    h = histogram("x", "x", values, ok, ok, [Threshold(column="x", op="max", value=2.0, source="filter.max_x")])
    assert h.clipped and h.edges[-1] == 2.0 and sum(h.kept) == 1000 and h.stats["max"] == 1000.0


def test_report_is_self_contained_and_idempotent(synthetic):
    out, gt = synthetic
    path = build_report(out, gallery=20, thumbnails=False)
    first = open(path, "rb").read()
    build_report(out, gallery=20, thumbnails=False)
    assert open(path, "rb").read() == first
    html = first.decode()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing fetched from anywhere
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    data = json.loads(re.search(r'<script type="application/json" id="vde-gallery">(.*?)</script>', html, re.S)
                      .group(1))
    assert {"kept", "dropped"} == {"kept" if i["kept"] else "dropped" for i in data["items"]}
    assert f'data-value="{gt["kept"]}"' in html


def test_fsspec_output_memory_filesystem():
    url = "memory://vde-report-test/run"
    gt = write_synthetic_run(url, clips=300, seed=1, captions=False)
    target = build_report(url, gallery=10)
    assert target == url + "/report/index.html"
    with fsspec.open(target, "r") as handle:
        html = handle.read()
    assert 'data-metric="kept"' in html and f'data-value="{gt["kept"]}"' in html
    assert "no captions, categories" in html  # captions absent: said so, nothing breaks
    fsspec.filesystem("memory").rm("/vde-report-test", recursive=True)


def test_minimal_manifest_without_scores_keep_or_run_json(tmp_path):
    clips = tmp_path / "manifest" / "clips"
    clips.mkdir(parents=True)
    pq.write_table(pa.table({"clip_id": ["a-0-10", "a-10-20"], "video_id": ["a", "a"], "uri": ["/x/a.mp4"] * 2,
                             "status": ["ok", "ok"], "error": pa.array([None, None], pa.string())}),
                   clips / "part-00000.parquet")
    data = collect(str(tmp_path))
    assert [(s["key"], s["count"]) for s in data.funnel] == [("videos", 1), ("videos_ok", 1),
                                                            ("videos_with_clips", 1), ("clips", 2)]
    html = open(build_report(str(tmp_path)), encoding="utf-8").read()
    assert "run.json is missing" in html and "no local source video" in html


def test_cli_report_and_missing_manifest(tmp_path, synthetic):
    from engine.cli import main

    out, _ = synthetic
    assert main(["report", out, "--gallery", "4", "--no-thumbnails"]) == 0
    assert (tmp_path / "nothing").mkdir() is None
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_real_run_with_a_broken_input_lists_it_under_its_cause(tmp_path, demo_videos):
    """Bad input as the engine records it (not a hand-written error string) shows up by cause, with the file."""
    import shutil

    from engine.executors.local import LocalExecutor
    from engine.pipeline import load_pipeline
    from engine.run import run_pipeline

    folder, truth = demo_videos
    inputs = tmp_path / "in"
    inputs.mkdir()
    name = sorted(truth)[0]
    shutil.copy(folder / name, inputs / name)
    (inputs / "broken_upload.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    out = tmp_path / "out"
    summary = run_pipeline(load_pipeline("demo"), str(inputs), str(out), LocalExecutor(progress=False))
    assert summary.videos_error == 1
    data = collect(str(out))
    assert sum(g["count"] for g in data.video_errors) == 1
    assert [f["file"] for f in data.video_errors[0]["files"]] == ["broken_upload.mp4"]
    assert {s["key"]: s["count"] for s in data.funnel}["videos_ok"] == 1
    html = open(build_report(str(out)), encoding="utf-8").read()
    assert "broken_upload.mp4" in html and 'href="#errors">Errors (1)' in html


def test_untrained_model_output_is_flagged(tmp_path):
    clips = tmp_path / "manifest" / "clips"
    clips.mkdir(parents=True)
    pq.write_table(pa.table({"clip_id": ["a-0-10"], "video_id": ["a"], "uri": ["/x/a.mp4"], "status": ["ok"],
                             "caption": ["[untrained model] tok tok tok"], "category": ["people"]}),
                   clips / "part-00000.parquet")
    data = collect(str(tmp_path))
    assert data.untrained and data.caption_hist.stats["mean"] == 3  # the marker is not counted as words
    assert "Untrained models." in open(build_report(str(tmp_path)), encoding="utf-8").read()

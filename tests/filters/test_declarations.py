"""The scorer declarations are the one place each fact lives: the score stage writes their columns, the
filter's keys and rules come from their thresholds, run.json records them, and the dashboard draws each
threshold on the column the filter tests (never a column guessed from the key's name)."""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pytest

from engine.executors.local import LocalExecutor
from engine.pipeline import PipelineError, parse_pipeline
from engine.run import run_pipeline
from engine.synthetic import Scene, Transition, make_video
from filters.clip_score import ClipScore
from filters.filter import Filter
from filters.score import Score
from filters.scorer import OPS
from filters.scorers import declarations, frame_scorers


def test_every_declaration_is_wired() -> None:
    decls = declarations()
    columns = {name for d in decls for name in d.columns}
    filter_keys = {f.name for f in dataclasses.fields(Filter)}
    writers = {"score": set(Score.adds), "clip_score": set(ClipScore.adds)}
    for d in decls:
        for key, threshold in d.thresholds.items():
            assert key in filter_keys and threshold.op in OPS, key
        for name in d.columns:
            assert d.stage not in writers or name in writers[d.stage], (d.name, name)
    for rule in Filter().rules():  # options resolved: every rule tests a declared column
        assert rule.column in columns, rule
    assert [cls.declaration.name for cls in frame_scorers()] == ["orientation", "borders", "motion", "camera",
                                                                 "clarity", "text"]


def test_camera_moves_rule_and_its_validation() -> None:
    rows = pa.Table.from_pylist([{"clip_id": c, "camera_move": m, "object_motion": o} for c, m, o in
                                 [("a", "static", 1.0), ("b", "pan_left", 1.0), ("c", "static", 0.01), ("d", None, 1.0)]])
    stage = Filter(camera_moves=["static"], min_object_motion=0.1)
    assert stage.reads == ("object_motion", "camera_move")  # funnel order: the declarations' order
    out = {r["clip_id"]: r for r in stage.process_batch(rows).to_pylist()}
    assert [out[c]["keep"] for c in "abcd"] == [True, False, False, False]
    assert out["b"]["drop_reason"] == "camera_move pan_left not in camera_moves [static]"
    assert out["c"]["drop_reason"] == "object_motion 0.01 < min_object_motion 0.1"
    with pytest.raises(PipelineError, match="unknown value.*'pan_sideways'.*choose from static, pan_left"):
        parse_pipeline("stages:\n  - stage: filter\n    camera_moves: [static, pan_sideways]\n", check_models=False)


def test_dashboard_draws_min_aesthetic_on_the_column_the_filter_tests(tiny_models, tmp_path) -> None:
    """``min_aesthetic`` tests ``aesthetic_mean`` (or ``aesthetic_min`` with ``aesthetic_reduce: min``); a
    guess from the key's name would pick ``aesthetic_min`` for both."""
    from dashboard.data import collect

    clip_dir, head = tiny_models
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "two_shots.mp4", [Scene(frames=30, seed=1, speed=2.0), Scene(frames=30, seed=2)],
               [Transition(kind="cut")], width=160, height=96)
    text = (f"stages:\n  - stage: probe\n  - stage: split\n    min_clip_s: 0.5\n"
            f"  - stage: score\n    pairs: 2\n    ocr: false\n"
            f"  - stage: clip_score\n    clip_model: {clip_dir}\n    aesthetic_head: {head}\n    frames: 3\n"
            f"    device: cpu\n"
            f"  - stage: filter\n    min_aesthetic: 4.5\n    max_motion: 50.0\n    missing: keep\n"
            f"  - stage: filter\n    min_aesthetic: 4.0\n    aesthetic_reduce: min\n    missing: keep\n")
    out = tmp_path / "run"
    run_pipeline(parse_pipeline(text, check_models=True), str(videos), str(out), LocalExecutor(progress=False),
                 on_error="raise")
    run = json.loads((out / "run.json").read_text())
    assert run["declarations"]["4"]["thresholds"]["min_aesthetic"] == {"column": "aesthetic_mean", "op": ">="}
    assert "camera_move" in {c for d in run["declarations"]["2"]["scorers"] for c in d["columns"]}
    data = collect(str(out))
    lines = [(t.source, t.column) for t in data.thresholds]
    # the first filter tests the mean, the second (aesthetic_reduce: min) the min
    assert [c for s, c in lines if s == "filter.min_aesthetic"] == ["aesthetic_mean", "aesthetic_min"]
    assert ("filter.max_motion", "motion_score") in lines
    assert set(data.bars["camera_move"].labels) <= {"static", "pan_right"} and data.bars["camera_move"].labels
    charted = {h.column for h in data.score_hists + data.bookkeeping_hists}
    assert {"object_motion", "camera_jitter", "camera_speed"} <= charted  # camera vs scene motion, per clip

"""Threshold filtering: annotate (keep, drop_reason) without removing rows; the funnel counts."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from engine.pipeline import PipelineError, parse_pipeline
from filters.filter import Filter


def _rows() -> pa.Table:
    base = {"uri": "u", "video_id": "v", "status": "ok", "error": None, "fps": 25.0, "clip_duration_s": 4.0,
            "display_width": 640, "display_height": 360, "orientation": "landscape", "border_frac": 0.0,
            "camera_motion": 0.0, "clarity": 100.0, "text_area_max": 0.0, "text_boxes": 0,
            "aesthetic_mean": 5.5, "aesthetic_min": 5.0, "consistency_mean": 0.95, "consistency_min": 0.9}
    return pa.Table.from_pylist([
        {**base, "clip_id": "good", "motion_score": 1.2},
        {**base, "clip_id": "static", "motion_score": 0.03},
        {**base, "clip_id": "many", "motion_score": 0.03, "aesthetic_mean": 3.1, "text_area_max": 0.2,
         "display_height": 1920, "display_width": 1080, "orientation": "portrait"},
        {**base, "clip_id": "nan", "motion_score": float("nan")},
        {**base, "clip_id": "null", "motion_score": None},
    ])


def test_annotates_every_failed_rule_and_keeps_all_rows() -> None:
    stage = Filter(min_motion=0.3, min_aesthetic=4.5, max_text_area=0.05, orientation="landscape")
    out = {r["clip_id"]: r for r in stage.process_batch(_rows()).to_pylist()}
    assert len(out) == 5  # nothing is removed
    assert out["good"]["keep"] is True and out["good"]["drop_reason"] is None
    assert out["static"]["keep"] is False
    assert out["static"]["drop_reason"] == "motion_score 0.03 < min_motion 0.3"
    assert out["many"]["drop_reason"] == ("orientation portrait != orientation landscape; "
                                          "motion_score 0.03 < min_motion 0.3; text_area_max 0.2 > max_text_area 0.05; "
                                          "aesthetic_mean 3.1 < min_aesthetic 4.5")
    assert out["nan"]["keep"] is False and out["nan"]["drop_reason"] == "motion_score missing (min_motion 0.3)"
    assert out["null"]["keep"] is False


def test_missing_keep_and_reductions() -> None:
    stage = Filter(min_motion=0.3, missing="keep", min_aesthetic=5.2, aesthetic_reduce="min",
                   min_consistency=0.92, consistency_reduce="mean")
    assert stage.reads == ("motion_score", "aesthetic_min", "consistency_mean")
    out = {r["clip_id"]: r for r in stage.process_batch(_rows()).to_pylist()}
    assert out["nan"]["drop_reason"] == "aesthetic_min 5 < min_aesthetic 5.2"  # the NaN motion is let through
    assert out["good"]["keep"] is False


def test_filters_chain_and_reasons_add_up() -> None:
    first = Filter(min_motion=0.3).process_batch(_rows())
    second = Filter(max_text_area=0.05).process_batch(first)
    out = {r["clip_id"]: r for r in second.to_pylist()}
    assert out["many"]["drop_reason"] == "motion_score 0.03 < min_motion 0.3; text_area_max 0.2 > max_text_area 0.05"
    assert out["static"]["keep"] is False  # dropped by the first filter stays dropped
    assert out["good"]["keep"] is True


def test_no_rules_keeps_everything_and_reads_nothing() -> None:
    stage = Filter()
    assert stage.reads == ()
    out = stage.process_batch(_rows()).to_pylist()
    assert all(r["keep"] is True and r["drop_reason"] is None for r in out)


def test_funnel_counts_each_rule_alone_and_in_order() -> None:
    stage = Filter(min_motion=0.3, min_aesthetic=4.5, max_text_area=0.05)
    table = stage.process_batch(_rows())
    table = pa.concat_tables([table, table.slice(0, 1).set_column(
        table.schema.get_field_index("status"), "status", pa.array(["error"]))])
    funnel = stage.funnel(table)
    assert (funnel["clips"], funnel["clips_ok"], funnel["clips_error"], funnel["kept"]) == (6, 5, 1, 1)
    steps = {s["rule"]: s for s in funnel["steps"]}
    assert [s["rule"] for s in funnel["steps"]] == ["min_motion", "max_text_area", "min_aesthetic"]
    assert steps["min_motion"]["fail"] == 4 and steps["min_motion"]["remaining"] == 1
    assert steps["min_aesthetic"]["fail"] == 1 and steps["min_aesthetic"]["removed"] == 0


def test_check_and_pipeline_validation_name_what_to_change() -> None:
    problems = Filter(min_motion=2.0, max_motion=1.0, max_text_area=5.0, min_consistency=3.0).check()
    assert len(problems) == 3 and "no clip could pass" in problems[0]
    with pytest.raises(PipelineError) as err:
        parse_pipeline("stages:\n  - stage: probe\n  - stage: split\n  - stage: filter\n    min_aesthetic: 4.5\n"
                       "    min_motion: 0.3\n", check_models=False)
    text = str(err.value)
    assert "reads column 'aesthetic_mean'" in text and "clip_score" in text
    assert "reads column 'motion_score'" in text and "(score)" in text
    with pytest.raises(PipelineError, match="min_aesthetik"):
        parse_pipeline("stages:\n  - stage: filter\n    min_aesthetik: 4\n", check_models=False)


def test_orientation_any_and_nan_formatting() -> None:
    stage = Filter(orientation="any", max_motion=1.0)
    assert stage.reads == ("motion_score",)
    assert stage.failure(stage.active_rules()[0], 1.23456) == "motion_score 1.23 > max_motion 1"
    assert stage.failure(stage.active_rules()[0], math.nan) == "motion_score missing (max_motion 1)"

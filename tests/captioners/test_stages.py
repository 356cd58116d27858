"""The stages through the real loading path on real clips: the demo pipeline with captions, categories and
DSG-Video (local executor; Ray in test_ray.py), a second VLM family, decode failures as error rows, edge-case
clips, missing weights reported before any clip is touched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from captioners.prompts import CATEGORY_NAMES, split_sentences
from engine.executors.local import LocalExecutor
from engine.pipeline import PipelineError, parse_pipeline
from engine.run import run_pipeline
from engine.stage import BASE_COLUMNS, OK, RunContext, run_stage
from engine.video import probe_video

SMALL = "max_new_tokens: 12\n    max_pixels: 12544\n    frames: 4\n    gpu_batch: 2\n    resources: {cpus: 1, gpus: 0}"


def caption_yaml(models: dict, family: str = "qwen2_5_vl", extra: str = "") -> str:
    return f"""
name: captions
stages:
  - stage: probe
  - stage: split
    min_clip_s: 2.0
    max_clip_s: 10.0
  - stage: caption
    model: {models[family]}
    {SMALL}
{extra}"""


def full_yaml(models: dict) -> str:
    return caption_yaml(models, extra=f"""  - stage: categorize
    model: {models['llm']}
    resources: {{cpus: 1, gpus: 0}}
  - stage: dsg_video
    vlm: {models['qwen2_5_vl']}
    sample_fraction: 1.0
    frames: 2
    question_tokens: 24
    max_pixels: 12544
    resources: {{cpus: 1, gpus: 0}}
""")


def test_demo_pipeline_captions_categories_dsg(tiny_models: dict, demo_videos, tmp_path: Path) -> None:
    folder, truth = demo_videos
    out = tmp_path / "run"
    pipeline = parse_pipeline(full_yaml(tiny_models))
    summary = run_pipeline(pipeline, str(folder), str(out), LocalExecutor(progress=False), on_error="raise")
    assert summary.videos_ok == len(truth) and summary.clips > 0
    clips = pq.read_table(out / "manifest" / "clips").to_pylist()
    assert len(clips) == summary.clips
    for c in clips:
        assert c["status"] == OK
        assert c["caption"].startswith("[untrained model] ") and c["caption_untrained"] is True
        assert c["caption_model"] == tiny_models["qwen2_5_vl"]
        assert c["caption_frames"] == min(4, c["end_frame"] - c["start_frame"])
        assert 1 <= c["caption_tokens"] <= 12
        assert c["category"] in CATEGORY_NAMES and c["category_untrained"] is True
        assert c["dsg_sentences"] == len(split_sentences(c["caption"][len("[untrained model] "):]))
        assert 0 <= c["dsg_hallucinated"] <= c["dsg_objects"]
        assert json.loads(c["dsg_detail"])["frames"] and len(json.loads(c["dsg_detail"])["frames"]) == 2
    cats = json.loads((out / "categories.json").read_text())
    assert cats["clips"] == len(clips) and cats["untrained_model"] is True
    assert sum(cats["counts"].values()) == len(clips)
    assert {k for k, v in cats["counts"].items() if v} == {c["category"] for c in clips}
    dsg = json.loads((out / "dsg_video.json").read_text())
    assert dsg["captions"] == len(clips) and dsg["untrained_model"] is True
    assert dsg["total_objects"] == sum(c["dsg_objects"] for c in clips)
    assert dsg["sentences"] == sum(c["dsg_sentences"] for c in clips)
    # tokens/s counts what each generating stage generated: the caption tokens of every clip, the category
    # answer of every clip, the DSG question lists
    metrics = json.loads((out / "run.json").read_text())["metrics"]["stages"]
    assert metrics["caption"]["tokens"] == sum(c["caption_tokens"] for c in clips)
    assert metrics["categorize"]["tokens"] >= len(clips)  # at least one token per answer
    assert metrics["dsg_video"]["tokens"] > 0
    for name in ("caption", "categorize", "dsg_video"):
        m = metrics[name]
        assert m["tokens_per_s"] == pytest.approx(m["tokens"] / m["wall_s"], rel=1e-2)
    assert "tokens_per_s" not in metrics["probe"]
    # a rerun skips finished videos and rewrites the same reports (finalize is idempotent)
    again = run_pipeline(parse_pipeline(full_yaml(tiny_models)), str(folder), str(out),
                         LocalExecutor(progress=False), on_error="raise")
    assert again.skipped == len(truth) and again.clips == summary.clips
    assert json.loads((out / "dsg_video.json").read_text())["clips"] == dsg["clips"]
    assert json.loads((out / "categories.json").read_text()) == cats


def _rows(path: Path, ranges: list[tuple[int, int]], uri: str | None = None) -> pa.Table:
    info = probe_video(str(path))
    rows = []
    for start, end in ranges:
        rows.append({"uri": uri or str(path), "video_id": "v" + path.stem, "bytes": 1, "status": OK, "error": None,
                     "clip_id": f"v{path.stem}-{start:07d}-{end:07d}", "start_frame": start, "end_frame": end,
                     "fps": info.fps, "codec": info.codec, "display_width": info.display_width,
                     "display_height": info.display_height, "clip_duration_s": (end - start) / info.fps})
    return pa.Table.from_pylist(rows)


def _stage(name: str, **kw):
    from engine.registry import stage_class

    stage = stage_class(name)(**kw)
    stage.setup(RunContext(output="/tmp/unused", on_error="record"))
    return stage


def _schema(stage) -> dict:
    return {**BASE_COLUMNS, **stage.adds}


def test_other_family_qwen3_vl_through_generate(tiny_models: dict, demo_videos) -> None:
    folder, _ = demo_videos
    stage = _stage("caption", model=tiny_models["qwen3_vl"], max_new_tokens=8, max_pixels=128 * 128, frames=4)
    assert stage.vlm.fast is None and stage.vlm.family == "qwen3_vl"
    out = run_stage(stage, _rows(folder / "street_cuts.mp4", [(0, 70), (80, 170)]), stage_ctx(), _schema(stage))
    rows = out.to_pylist()
    assert [r["status"] for r in rows] == [OK, OK]
    assert all(r["caption"].startswith("[untrained model] ") and r["caption_frames"] == 4 for r in rows)
    assert stage.vlm.factor == 32  # Qwen3-VL: patch 16 x merge 2


def stage_ctx() -> RunContext:
    return RunContext(output="/tmp/unused", on_error="record")


def test_decode_failures_become_error_rows(tiny_models: dict, demo_videos, tmp_path: Path) -> None:
    folder, _ = demo_videos
    video = folder / "news_fade.mp4"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(video.read_bytes()[:3000])  # header survives, the frames do not
    table = pa.concat_tables([_rows(video, [(0, 60), (100, 9999)]), _rows(video, [(0, 60)], uri=str(broken)),
                              _rows(video, [(100, 150)])])
    stage = _stage("caption", model=tiny_models["qwen2_5_vl"], max_new_tokens=6, max_pixels=12544, frames=4)
    rows = run_stage(stage, table, stage_ctx(), _schema(stage)).to_pylist()
    assert [r["status"] for r in rows] == [OK, "error", "error", OK]
    assert rows[1]["error"].startswith("caption: ") and "out of range" in rows[1]["error"]
    assert "caption: " in rows[2]["error"] and str(broken) in rows[2]["error"]
    assert rows[0]["caption"] and rows[3]["caption"] and rows[1]["caption"] is None


def test_edge_clips_one_frame_and_rotated(tiny_models: dict, demo_videos, shared_videos) -> None:
    folder, _ = demo_videos
    stage = _stage("caption", model=tiny_models["qwen2_5_vl"], max_new_tokens=6, max_pixels=12544, frames=8)
    one = run_stage(stage, _rows(folder / "street_cuts.mp4", [(10, 11)]), stage_ctx(), _schema(stage)).to_pylist()
    assert one[0]["status"] == OK and one[0]["caption_frames"] == 1 and one[0]["caption"]
    rotated = _rows(shared_videos / "decord-video_90.mov", [(0, 3)])  # 568x320 coded, 90 degrees: portrait
    row = rotated.to_pylist()[0]
    assert (row["display_width"], row["display_height"]) == (320, 568)
    plan = stage.plan(row)
    assert plan.size[1] > plan.size[0] and plan.indices == [0, 1, 2]
    stage.feeder.submit([row], [plan])
    frames = stage.feeder.result(0)
    assert frames.shape == (3, plan.size[1], plan.size[0], 3)
    out = run_stage(stage, rotated, stage_ctx(), _schema(stage)).to_pylist()
    assert out[0]["status"] == OK and out[0]["caption_frames"] == 3


def test_dsg_counts_follow_the_vlm_answers(tiny_models: dict, demo_videos) -> None:
    folder, _ = demo_videos
    stage = _stage("dsg_video", vlm=tiny_models["qwen2_5_vl"], frames=3, max_pixels=12544)
    row = _rows(folder / "nature_dissolve.mp4", [(0, 70)]).to_pylist()[0]
    from captioners.frames import FramePlan, sample_indices

    idx, step = sample_indices(row, 3)
    stage.feeder.submit([row], [FramePlan(indices=idx, size=stage.model.frame_size(320, 180, 12544),
                                          seconds_per_frame=step)])
    frames = list(stage.feeder.result(0))
    sentences = ["A red bird sits on a branch.", "The sky is grey.", "A man waves."]
    text = "1 | bird | Is there a bird?\n1 | branch | Is there a branch?\n2 | sky | Is there a sky?\n3 | man |"
    counts, detail = stage.check_caption(sentences, text, frames)
    p = np.array([item["p_yes"] for item in detail["items"]])  # [items, frames]
    assert p.shape == (4, 3)
    expected_bad = [k for k in range(4) if (p[k] <= stage.threshold).all()]
    assert counts.objects == 4 and counts.hallucinated == len(expected_bad)
    assert counts.sentences == 3
    assert counts.sentences_hallucinated == len({s for k in expected_bad for s in detail["items"][k]["sentences"]})
    stage.threshold = 1e-9  # every item counts as seen
    assert stage.check_caption(sentences, text, frames)[0].hallucinated == 0
    stage.threshold = 1 - 1e-9  # nothing counts as seen: every item and every sentence is hallucinated
    c = stage.check_caption(sentences, text, frames)[0]
    assert (c.hallucinated, c.sentences_hallucinated) == (4, 3)


def test_missing_models_are_listed_before_the_run() -> None:
    text = """
stages:
  - stage: probe
  - stage: split
  - stage: caption
    model: /nonexistent/vlm
  - stage: categorize
    model: no-such-org/no-such-llm
  - stage: dsg_video
    vlm: no-such-org/no-such-vlm
"""
    with pytest.raises(PipelineError) as err:
        parse_pipeline(text, check_models=True)
    message = str(err.value)
    for name in ("/nonexistent/vlm", "no-such-org/no-such-llm", "no-such-org/no-such-vlm"):
        assert name in message
    assert "nothing was run" in message


def test_check_rejects_bad_values() -> None:
    text = "stages:\n  - stage: caption\n    frames: 0\n    max_new_tokens: 0\n  - stage: dsg_video\n    threshold: 1.5\n"
    with pytest.raises(PipelineError) as err:
        parse_pipeline(text, check_models=False)
    assert "'frames'" in str(err.value) and "'max_new_tokens'" in str(err.value) and "'threshold'" in str(err.value)


def test_tiny_models_are_built_once(tiny_models: dict) -> None:
    from captioners.synthetic import build_tiny_models
    from engine.models import UNTRAINED_MARKER

    first = Path(tiny_models["llm"])
    stamp = (first / "config.json").stat().st_mtime_ns
    again = build_tiny_models(first.parent)
    assert again == tiny_models and (first / "config.json").stat().st_mtime_ns == stamp
    assert all((Path(p) / UNTRAINED_MARKER).exists() for p in again.values())

"""pipelines/stiv.yaml: validates (listing the real weights as missing), and a copy pointing at tiny
random models runs end to end on the demo sample with an auditable funnel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.compute as pc
import pytest

from engine.executors.local import LocalExecutor
from engine.manifest import Manifest
from engine.pipeline import PIPELINE_DIR, PipelineError, parse_pipeline
from engine.run import run_pipeline

STIV = PIPELINE_DIR / "stiv.yaml"


def test_stiv_yaml_validates_except_for_the_real_weights(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.chdir(tmp_path)  # no aesthetic head next to us
    pipeline = parse_pipeline(STIV.read_text(), source=str(STIV), check_models=False)
    assert [s.name for s in pipeline.stages] == ["probe", "split", "score", "clip_score", "filter", "dedup",
                                                 "caption", "categorize", "dsg_video", "encode", "shard"]
    gpus = {s.name: s.resources.gpus for s in pipeline.stages if s.resources.gpus}
    assert gpus["clip_score"] > 0 and 0 < sum(gpus.values()) <= 1  # every GPU pool fits on one GPU
    with pytest.raises(PipelineError) as err:
        parse_pipeline(STIV.read_text(), source=str(STIV), check_models=True)
    problems = err.value.problems
    assert len(problems) == 7  # every real model, listed together before anything runs
    assert "clip_model" in problems[0] and "timm/vit_large_patch14_clip_224.openai" in problems[0]
    assert "aesthetic_head" in problems[1] and "sac+logos+ava1-l14-linearMSE.pth" in problems[1]
    for field, name in [("model", "Qwen/Qwen2.5-VL-7B-Instruct"), ("model", "Qwen/Qwen2.5-1.5B-Instruct"),
                        ("vlm", "Qwen/Qwen2.5-VL-7B-Instruct"), ("vae", "stabilityai/sd-vae-ft-ema"),
                        ("text_encoder", "openai/clip-vit-large-patch14")]:
        assert any(f"'{field}' = '{name}'" in p for p in problems), (field, name)


def _tiny_stiv(clip_dir: Path, head: Path) -> str:
    """stiv.yaml up to the filter (captions and shards are tested in their own packages), tiny models."""
    text = STIV.read_text().split("  - stage: caption")[0]
    text = re.sub(r"clip_model: \S+", f"clip_model: {clip_dir}", text)
    text = re.sub(r"aesthetic_head: \S+", f"aesthetic_head: {head}", text)
    text = re.sub(r"resources: \{cpus: 8, gpus: [0-9.]+\}", "resources: {cpus: 1}", text)
    text = re.sub(r"min_height: 256", "min_height: 180", text)  # the demo sample is 320x180
    text = re.sub(r"min_width: 256", "min_width: 320", text)
    return text


def test_tiny_stiv_runs_end_to_end_with_an_auditable_funnel(tiny_models, demo_videos, tmp_path) -> None:
    clip_dir, head = tiny_models
    folder, truth = demo_videos
    pipeline = parse_pipeline(_tiny_stiv(clip_dir, head), source="tiny-stiv", check_models=True)
    out = tmp_path / "run"
    summary = run_pipeline(pipeline, str(folder), str(out), LocalExecutor(progress=False), on_error="raise")
    clips = Manifest(str(out)).read("clips")
    assert summary.clips == clips.num_rows >= 5 and summary.videos_error == 0
    rows = clips.to_pylist()
    for row in rows:  # every clip was scored and annotated, dropped ones included
        assert row["status"] == "ok" and row["keep"] is not None
        assert row["motion_score"] is not None and row["aesthetic_mean"] is not None
        assert row["clip_untrained"] is True
        if not row["keep"]:
            assert row["drop_reason"]
    # A random head scores about 0, so the paper-like min_aesthetic 4.5 drops every clip, and says so.
    assert summary.kept == 0
    assert all("< min_aesthetic 4.5" in r["drop_reason"] for r in rows)
    # The demo's "street_cuts" shot 2 pans at 6 px/frame, shot 3 is static (no pan, still square).
    street = sorted((r for r in rows if r["uri"].endswith("street_cuts.mp4")), key=lambda r: r["start_frame"])
    assert street[1]["motion_score"] > 3.0 > 0.3 > street[-1]["motion_score"]
    assert "motion_score" in street[-1]["drop_reason"] and "min_motion" in street[-1]["drop_reason"]
    news = [r for r in rows if r["uri"].endswith("news_fade.mp4")]
    assert news[0]["text_area_max"] > 0.05 and "max_text_area" in news[0]["drop_reason"]
    funnel = json.loads((out / "manifest" / "funnel.json").read_text())
    assert funnel["clips"] == clips.num_rows and funnel["kept"] == 0
    assert funnel["steps"][-3]["rule"] == "min_aesthetic" and funnel["steps"][-3]["remaining"] == 0
    assert funnel["steps"][-1]["rule"] == "dedup" and funnel["steps"][-1]["removed"] == 0  # nothing left to dedup
    assert int(pc.sum(pc.invert(clips.column("keep"))).as_py()) == clips.num_rows

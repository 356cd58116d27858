"""The caption stage as a Ray Data actor (the executor a cluster run uses), on one demo video."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq

from engine.pipeline import parse_pipeline
from engine.run import run_pipeline
from engine.stage import OK


def test_caption_on_ray(tiny_models: dict, demo_videos, tmp_path: Path) -> None:
    from engine.executors.ray_executor import RayExecutor

    folder, _ = demo_videos
    text = f"""
stages:
  - stage: probe
  - stage: split
    min_clip_s: 2.0
  - stage: caption
    model: {tiny_models['qwen2_5_vl']}
    max_new_tokens: 8
    max_pixels: 12544
    frames: 4
    resources: {{cpus: 1, gpus: 0}}
"""
    executor = RayExecutor(num_cpus=4, progress=False)
    start = time.perf_counter()
    try:
        summary = run_pipeline(parse_pipeline(text), str(folder / "street_cuts.mp4"), str(tmp_path / "out"),
                               executor, on_error="raise")
    finally:
        executor.shutdown()
    clips = pq.read_table(tmp_path / "out" / "manifest" / "clips").to_pylist()
    assert summary.videos_ok == 1 and len(clips) == summary.clips == 3  # the video has 3 shots
    assert all(c["status"] == OK and c["caption"].startswith("[untrained model] ") for c in clips)
    assert time.perf_counter() - start < 120

"""The tiny STIV scoring pipeline on Ray Data (score as tasks, clip_score as an actor pool, filter)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine.pipeline import parse_pipeline
from engine.run import run_pipeline
from engine.stage import OK
from tests.filters.test_pipeline import _tiny_stiv


@pytest.mark.slow
def test_tiny_stiv_on_ray(tiny_models, demo_videos, tmp_path: Path) -> None:
    from engine.executors.ray_executor import RayExecutor

    clip_dir, head = tiny_models
    folder, _ = demo_videos
    executor = RayExecutor(num_cpus=4, progress=False)
    try:
        summary = run_pipeline(parse_pipeline(_tiny_stiv(clip_dir, head)), str(folder / "street_cuts.mp4"),
                               str(tmp_path / "out"), executor, on_error="raise")
    finally:
        executor.shutdown()
    clips = pq.read_table(tmp_path / "out" / "manifest" / "clips").to_pylist()
    assert summary.videos_ok == 1 and len(clips) == summary.clips == 3  # the video has 3 shots
    assert all(c["status"] == OK and c["clip_untrained"] and c["keep"] is False for c in clips)
    assert all(c["motion_score"] is not None and "min_aesthetic" in c["drop_reason"] for c in clips)
    assert (tmp_path / "out" / "manifest" / "funnel.json").exists()

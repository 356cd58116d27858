"""Same input, same bytes: two demo runs, and a local and a Ray run, give identical clip files and shards.

Both runs of a pair write to the same output root, one after the other, as two runs of one command do."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from engine.executors.local import LocalExecutor
from engine.pipeline import load_pipeline
from engine.run import run_pipeline


def _digests(out: Path) -> dict:
    """sha256 of every clip file, and the shard index (every shard's sha256, count and bytes)."""
    clips = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "clips").iterdir())}
    index = json.loads((out / "shards" / "index.json").read_text())
    return {"clips": clips, "shards": index["shards"]}


def _demo(folder: Path, out: Path, executor) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    summary = run_pipeline(load_pipeline("demo"), str(folder), str(out), executor)
    assert summary.videos_error == 0 and summary.clips_error == 0 and summary.clips > 0
    return _digests(out)


@pytest.mark.slow
def test_two_demo_runs_give_the_same_bytes(tmp_path, demo_videos):
    folder, _ = demo_videos
    first = _demo(folder, tmp_path / "out", LocalExecutor(progress=False))
    second = _demo(folder, tmp_path / "out", LocalExecutor(progress=False))
    assert first["clips"] and first["shards"]
    assert first == second


@pytest.mark.slow
def test_local_and_ray_give_the_same_bytes(tmp_path, demo_videos):
    from engine.executors.ray_executor import RayExecutor

    folder, _ = demo_videos
    local = _demo(folder, tmp_path / "out", LocalExecutor(progress=False))
    executor = RayExecutor(progress=False)
    try:
        by_ray = _demo(folder, tmp_path / "out", executor)
    finally:
        executor.shutdown()
    assert local == by_ray

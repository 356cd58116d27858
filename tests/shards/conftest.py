"""Tiny random-weight models for the shard tests, built once per session through shards.synthetic (the real save path)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    from engine.tiny import tiny_path
    from shards.synthetic import build_tiny_models

    folder = tmp_path_factory.mktemp("tiny_models")
    models = build_tiny_models(folder)
    models["wan_vae"] = str(tiny_path("wan-vae", folder))
    models["folder"] = str(folder)
    return models


@pytest.fixture(scope="session")
def clip_video(tmp_path_factory) -> tuple[Path, dict]:
    """A 64-frame 96x64 video: two scenes with a hard cut at frame 32."""
    from engine.synthetic import Scene, Transition, make_video

    folder = tmp_path_factory.mktemp("shard_videos")
    path = folder / "two_scenes.mp4"
    truth = make_video(path, [Scene(frames=32, seed=11, speed=1.0), Scene(frames=32, seed=12, object_speed=2.0)],
                       [Transition(kind="cut")], width=96, height=64, fps=24)
    return path, {"frames": truth.frames, "width": 96, "height": 64, "fps": 24}

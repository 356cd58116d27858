"""Shared fixtures: the shared test videos (skipped cleanly when ../shared is absent) and synthetic videos
with known content."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("VDE_SHARED", REPO.parent / "shared"))
SHARED_VIDEOS = SHARED / "testdata" / "videos"
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    if not SHARED_VIDEOS.is_dir():
        pytest.skip("../shared/testdata is absent")
    return SHARED_VIDEOS


@pytest.fixture(scope="session")
def ground_truth(shared_videos: Path) -> dict:
    return json.loads((shared_videos.parent / "ground_truth.json").read_text())["videos"]


@pytest.fixture(scope="session")
def demo_videos(tmp_path_factory) -> tuple[Path, dict]:
    """The bundled demo sample, written once per test session, with its ground truth."""
    from engine.synthetic import write_demo_videos

    folder = tmp_path_factory.mktemp("demo_videos")
    return folder, write_demo_videos(folder)

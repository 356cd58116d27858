"""Fixtures for the scoring and filtering tests: tiny random-weight CLIP + aesthetic head saved in the
real formats, synthetic videos with known motion, text and blur, and clip rows built from them."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from engine.synthetic import GroundTruth, Scene, Transition, make_video
from engine.video import probe_video

PAN_SPEEDS = [0.0, 1.0, 2.0, 4.0, 8.0]  # px/frame at 320 px width, one shot each


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    """(open_clip local dir, LAION-layout head .pth), both random and marked untrained."""
    from filters.synthetic import write_tiny_clip, write_tiny_head

    root = tmp_path_factory.mktemp("tiny_models")
    return write_tiny_clip(root / "clip"), write_tiny_head(root / "head" / "aesthetic.pth", input_size=32)


def clip_rows(path: Path | str, spans: list[tuple[int, int]], video_id: str = "v") -> list[dict]:
    """The rows a clip stage sees after probe + split, for ``spans`` = [(start, end_exclusive)]."""
    info = probe_video(str(path))
    base = {"uri": str(path), "video_id": video_id, "bytes": Path(path).stat().st_size, "status": "ok",
            "error": None, "duration_s": info.duration_s, "fps": info.fps, "frames": info.frames,
            "width": info.width, "height": info.height, "display_width": info.display_width,
            "display_height": info.display_height, "rotation": info.rotation, "codec": info.codec}
    return [{**base, "clip_id": f"{video_id}-{s:07d}-{e:07d}", "start_frame": s, "end_frame": e,
             "clip_frames": e - s, "clip_duration_s": (e - s) / info.fps} for s, e in spans]


@pytest.fixture(scope="session")
def pans(tmp_path_factory) -> tuple[Path, GroundTruth]:
    """One 320x180 video: a shot per PAN_SPEEDS background pan (the square stands still), hard cuts.

    Near-lossless (crf 4): at the default crf 20, x264 codes much of the soft texture as skipped blocks,
    so decoded pans of 1-2 px/frame really move ~20% less, whatever measures them."""
    path = tmp_path_factory.mktemp("pans") / "pans.mp4"
    scenes = [Scene(frames=20, seed=10 + k, speed=s, object_speed=0.0) for k, s in enumerate(PAN_SPEEDS)]
    truth = make_video(path, scenes, [Transition(kind="cut")] * (len(scenes) - 1), crf=4)
    return path, truth


@pytest.fixture(scope="session")
def text_and_blur(tmp_path_factory) -> tuple[Path, GroundTruth]:
    """640x360: shot 0 no text, shot 1 a rendered caption of known box, shot 2 = shot 0 blurred (sigma 3)."""
    path = tmp_path_factory.mktemp("text") / "text_blur.mp4"
    scenes = [Scene(frames=12, seed=4, object_speed=1.0), Scene(frames=12, seed=4, object_speed=1.0,
                                                                 text="SUBTITLE LINE 2026"),
              Scene(frames=12, seed=4, object_speed=1.0, blur=3.0)]
    truth = make_video(path, scenes, [Transition(kind="cut")] * 2, width=640, height=360)
    return path, truth


def write_frames(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    """Encode RGB frames (even sizes) as H.264."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path

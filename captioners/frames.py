"""Frames for the model stages: which frames of a clip to sample, and decoding them on CPU threads while
the GPU works.

``FrameFeeder.submit(rows, ...)`` starts decoding at once — one task per video, so clips of the same video
share one open reader and mostly sequential seeks — and ``result(i)`` waits only for row i's video. A stage
captions the first rows while later ones are still being decoded. PyAV and decord release the GIL while
decoding, so threads overlap decode, resize and the GPU. A clip that cannot be decoded gives its error
message instead of frames; its row becomes an error row, the others go on.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import av
import numpy as np

from engine.io import local_copy
from engine.video import VideoError, clip_frame_indices, open_video

log = logging.getLogger(__name__)

DECODE_ERRORS = (VideoError, IndexError, RuntimeError, OSError, ValueError, av.error.FFmpegError)


@dataclass(kw_only=True, slots=True)
class FramePlan:
    indices: list[int]  # decoded-frame indices to read
    size: tuple[int, int]  # (width, height) to resize to
    seconds_per_frame: float  # time between consecutive sampled frames


def sample_indices(row: dict, frames: int, fps: float = 0.0, max_frames: int = 64) -> tuple[list[int], float]:
    """Frame indices spread over the clip ``[start_frame, end_frame)`` and the time between them.

    ``fps > 0`` samples at that rate (at least 1 frame, at most ``max_frames``); otherwise ``frames`` frames,
    first and last included. A clip shorter than the count gives every frame it has."""
    start, end = int(row["start_frame"]), int(row["end_frame"])
    video_fps = float(row.get("fps") or 0) or 25.0
    if fps > 0:
        duration = float(row.get("clip_duration_s") or (end - start) / video_fps)
        count = int(min(max_frames, max(1, round(duration * fps))))
    else:
        count = frames
    indices = clip_frame_indices(start, end, count)
    if len(indices) > 1:
        step = (indices[-1] - indices[0]) / (len(indices) - 1) / video_fps
    else:
        step = 1.0 / video_fps
    return indices, max(step, 1e-3)


def plan_clip(row: dict, vlm, frames: int, max_pixels: int, min_pixels: int = 0, fps: float = 0.0,
              max_frames: int = 64) -> FramePlan:
    """The frames to sample from ``row``'s clip (``sample_indices``), at the size ``vlm`` takes them."""
    indices, step = sample_indices(row, frames, fps, max_frames)
    size = vlm.frame_size(int(row.get("display_width") or 1), int(row.get("display_height") or 1), max_pixels,
                          min_pixels)
    return FramePlan(indices=indices, size=size, seconds_per_frame=step)


class FrameFeeder:
    """Decodes the frames of many clips on a thread pool, grouped by video."""

    def __init__(self, threads: int = 8):
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="vde-frames")
        self._futures: list[Future] = []
        self._slot: list[tuple[int, int]] = []

    def submit(self, rows: list[dict], plans: list[FramePlan | None]) -> None:
        """Start decoding ``plans[i]`` of ``rows[i]`` (None = nothing to decode for that row)."""
        groups: dict[str, list[int]] = {}
        for i, (row, plan) in enumerate(zip(rows, plans)):
            if plan is not None:
                groups.setdefault(row["uri"], []).append(i)
        self._futures, self._slot = [], [(-1, -1)] * len(rows)
        for uri, members in groups.items():
            codec = rows[members[0]].get("codec")
            self._futures.append(self.pool.submit(_decode_video, uri, codec, [plans[i] for i in members]))
            for k, i in enumerate(members):
                self._slot[i] = (len(self._futures) - 1, k)

    def result(self, i: int) -> np.ndarray | str | None:
        """Row i's frames ``[T, H, W, 3]``, or the reason they could not be decoded, or None if not planned."""
        future, k = self._slot[i]
        if future < 0:
            return None
        return self._futures[future].result()[k]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _decode_video(uri: str, codec: str | None, plans: list[FramePlan]) -> list[np.ndarray | str]:
    try:
        with local_copy(uri) as path:
            reader = open_video(path, codec=codec)
            try:
                return [_read(reader, plan) for plan in plans]
            finally:
                reader.close()
    except DECODE_ERRORS as exc:
        return [f"cannot open the video for frames ({type(exc).__name__}: {exc})"] * len(plans)


def _read(reader, plan: FramePlan) -> np.ndarray | str:
    try:
        frames = reader.get_frames(plan.indices, size=plan.size)
    except DECODE_ERRORS as exc:
        return f"cannot decode frames {plan.indices[:3]}... ({type(exc).__name__}: {exc})"
    if frames.ndim != 4 or frames.shape[0] == 0:
        return "no frame decoded"
    return np.ascontiguousarray(frames)

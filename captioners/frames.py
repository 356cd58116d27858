"""Frames for the model stages: which frames of a clip to sample, and getting them from the engine's
frame service (``engine.frames``) while the GPU works.

``FrameFeeder.submit(rows, ...)`` starts decoding at once (one task per video, each file opened once and
each needed frame decoded once) and ``result(i)`` waits only for row i's video. A stage captions the first
rows while later ones are still being decoded. A clip that cannot be decoded gives its error message
instead of frames; its row becomes an error row, the others go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from engine.frames import FrameBatch, FrameRequest, FrameService
from engine.video import clip_frame_indices

log = logging.getLogger(__name__)


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
    """The rows-and-plans face of ``engine.frames.FrameService`` for the captioning stages."""

    def __init__(self, threads: int = 8):
        self.service = FrameService(threads)
        self._batch: FrameBatch | None = None
        self._request_of: dict[int, int] = {}

    def submit(self, rows: list[dict], plans: list[FramePlan | None]) -> None:
        """Start decoding ``plans[i]`` of ``rows[i]`` (None = nothing to decode for that row)."""
        requests: list[FrameRequest] = []
        self._request_of = {}
        for i, (row, plan) in enumerate(zip(rows, plans)):
            if plan is not None:
                self._request_of[i] = len(requests)
                requests.append(FrameRequest(uri=row["uri"], indices=tuple(plan.indices), size=plan.size, key=i,
                                             decoded_frames=row.get("frames_decoded")))
        if self._batch is not None:
            self._batch.close()
        self._batch = self.service.submit(requests)

    def result(self, i: int) -> np.ndarray | str | None:
        """Row i's frames ``[T, H, W, 3]``, or the reason they could not be decoded, or None if not planned."""
        if i not in self._request_of or self._batch is None:
            return None
        clip = self._batch.result(self._request_of[i])
        if clip.error is not None:
            return f"cannot decode frames {list(clip.request.indices[:3])}... ({clip.error})"
        return np.ascontiguousarray(clip.frames)

    def close(self) -> None:
        self.service.close()

"""The fused CPU scoring stage: one decode per clip feeds motion, clarity, text area, black borders and
orientation.

Frames: ``pairs`` anchor frames spread evenly over ``[start_frame, end_frame)``, each with its next frame,
decoded once at ``analysis_side`` px on the long side (display orientation, rotation applied). Motion
runs on the pairs scaled to 320 px wide; clarity and borders on the anchors; text detection on
``ocr_frames`` of the anchors. A value that cannot be measured (a 1-frame clip has no frame pair, a 1x1
video has no detail) is NaN and ``score_notes`` says why.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa

from engine.stage import Stage, StageError, map_rows
from engine.video import clip_frame_indices
from filters import scorers
from engine.frames import ClipFrames, FrameRequest, read_frames

log = logging.getLogger(__name__)
NAN = float("nan")

SCORE_COLUMNS: dict[str, pa.DataType] = {
    "motion_score": pa.float64(),  # mean optical-flow magnitude, px/frame at 320 px width
    "motion_p90": pa.float64(),  # 90th percentile over frame pairs of the per-pair mean
    "camera_motion": pa.float64(),  # mean |median flow vector|: the camera-motion proxy, px/frame
    "moving_frac": pa.float64(),  # mean fraction of pixels moving more than `moving_px`
    "clarity": pa.float64(),  # mean variance of the Laplacian at the reference size
    "clarity_min": pa.float64(),  # the blurriest sampled frame
    "text_area_max": pa.float64(),  # largest per-frame text-box area / frame area
    "text_area_mean": pa.float64(),
    "text_boxes": pa.int32(),  # most text boxes in one frame
    "crop_x": pa.int32(),  # content box inside black bars, display pixels (null: all frames black)
    "crop_y": pa.int32(),
    "crop_w": pa.int32(),
    "crop_h": pa.int32(),
    "border_frac": pa.float64(),  # 1 - content area / frame area
    "orientation": pa.string(),  # landscape | portrait | square (display orientation, rotation applied)
    "aspect_ratio": pa.float64(),  # display width / height
    "score_frames": pa.int32(),  # frames decoded for this clip
    "score_notes": pa.string(),  # why a value is NaN, "; "-joined; null when every value was measured
}


@dataclass(kw_only=True)
class Score(Stage):
    """Motion, clarity, on-screen text, black borders and orientation of every clip, from one decode."""

    name: ClassVar[str] = "score"
    reads: ClassVar[tuple[str, ...]] = ("uri", "clip_id", "start_frame", "end_frame", "display_width",
                                        "display_height")
    adds: ClassVar[dict[str, pa.DataType]] = SCORE_COLUMNS
    skips_dropped: ClassVar[bool] = True

    pairs: int = 8  # frame pairs for motion, spread evenly over the clip; their first frames feed the rest
    flow: Literal["farneback", "dis"] = "farneback"  # farneback matches the reference calibration; dis is ~2x faster
    motion_width: int = scorers.MOTION_WIDTH  # flow runs at this width, so px/frame compare across videos
    moving_px: float = 1.0  # a pixel "moves" above this many px/frame (at motion_width)
    analysis_side: int = 640  # long side of the decoded frames: the clarity reference size and the OCR input
    ocr: bool = True  # run the text detector
    ocr_frames: int = 4  # anchor frames the text detector sees (it costs ~30-70 ms per 640 px frame)
    ocr_verify: bool = False  # also recognise the text and drop boxes without a letter or digit (3-5x slower)
    ocr_threads: int = 1  # onnxruntime threads per worker; Ray runs several workers per node
    border_threshold: float = 24.0  # luma (0-255) at or below which a bar counts as black
    min_side: int = 16  # frames smaller than this (display px) get NaN image scores instead of noise
    backend: Literal["auto", "decord", "pyav"] = "auto"  # frame reader (engine.video.open_video)
    batch_size: int = 16

    def check(self) -> list[str]:
        problems = []
        if self.pairs < 1:
            problems.append(f"'pairs' must be >= 1, got {self.pairs}")
        if self.motion_width < 16 or self.analysis_side < 16:
            problems.append("'motion_width' and 'analysis_side' must be >= 16 px")
        if self.ocr and not 1 <= self.ocr_frames <= self.pairs:
            problems.append(f"'ocr_frames' must be within 1..pairs ({self.pairs}), got {self.ocr_frames}")
        if not 0 <= self.border_threshold < 255:
            problems.append(f"'border_threshold' must be within 0..255, got {self.border_threshold}")
        return problems

    # -- frames ------------------------------------------------------------------------------------------
    def frame_indices(self, row: dict) -> list[int]:
        """Anchors and their successors, sorted; a 1-frame clip gives just that frame."""
        start, end = int(row["start_frame"]), int(row["end_frame"])
        if end - start <= 1:
            return [start] if end > start else []
        anchors = clip_frame_indices(start, end - 1, self.pairs)
        return sorted({i for a in anchors for i in (a, a + 1)})

    def decode_size(self, row: dict) -> tuple[int, int]:
        return scorers.scaled_size(int(row["display_width"]), int(row["display_height"]), self.analysis_side)

    # -- scoring -----------------------------------------------------------------------------------------
    def process_batch(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        requests = [FrameRequest(uri=r["uri"], indices=tuple(self.frame_indices(r)), size=self.decode_size(r),
                                 key=r["clip_id"], decoded_frames=r.get("frames_decoded"), backend=self.backend)
                    for r in rows]
        clips = {c.key: c for c in read_frames(requests)}
        return map_rows(batch, self.name, lambda row: self._score(row, clips[row["clip_id"]]))

    def _score(self, row: dict, clip: ClipFrames) -> dict:
        if clip.error:
            raise StageError(clip.error)
        scores = self.measure(clip.frames, clip.indices, int(row["display_width"]), int(row["display_height"]))
        if clip.note:
            scores["score_notes"] = "; ".join(filter(None, [clip.note, scores["score_notes"]]))
        return {**row, **scores}

    def measure(self, frames: np.ndarray, indices: list[int], display_w: int, display_h: int) -> dict:
        """Every score of one clip from its decoded frames (``indices`` are their frame numbers)."""
        notes: list[str] = []
        out: dict = {"orientation": scorers.orientation(display_w, display_h),
                     "aspect_ratio": display_w / display_h if display_h > 0 else NAN,
                     "score_frames": len(frames)}
        position = {f: k for k, f in enumerate(indices)}
        anchors = [f for f in indices if f + 1 in position]  # frames whose successor was decoded
        anchor_rows = [position[a] for a in anchors] if anchors else [0]
        anchor_frames = frames[anchor_rows]
        small = min(display_w, display_h) < self.min_side
        if small:
            notes.append(f"frame {display_w}x{display_h} is below min_side {self.min_side} px: "
                         "no motion, clarity, text or border scores")

        grey = scorers.to_grey(frames)
        if small or not anchors:
            if not small:
                notes.append(f"{len(frames)} frame(s) decoded: motion needs a pair of consecutive frames")
            motion = scorers.MotionStats(mean=NAN, p90=NAN, camera=NAN, moving_frac=NAN)
        else:
            ref = scorers.resize_all(grey, scorers.width_size(grey.shape[2], grey.shape[1], self.motion_width))
            pairs = [(ref[position[a]], ref[position[a + 1]]) for a in anchors]
            motion = scorers.motion_stats(pairs, self.flow, self.moving_px)
        out.update(motion_score=motion.mean, motion_p90=motion.p90, camera_motion=motion.camera,
                   moving_frac=motion.moving_frac)

        anchor_grey = grey[anchor_rows]
        if small:
            out.update(clarity=NAN, clarity_min=NAN)
        else:
            values = [scorers.laplacian_clarity(g) for g in anchor_grey]
            out.update(clarity=float(np.mean(values)), clarity_min=float(np.min(values)))

        out.update(self._text(anchor_frames, display_w, display_h, small, notes))
        out.update(self._borders(anchor_grey, display_w, display_h, small, notes))
        out["score_notes"] = "; ".join(notes) or None
        return out

    def _text(self, frames: np.ndarray, display_w: int, display_h: int, small: bool, notes: list[str]) -> dict:
        if not self.ocr or small:
            if not self.ocr:
                notes.append("ocr off")
            return {"text_area_max": NAN, "text_area_mean": NAN, "text_boxes": None}
        picks = clip_frame_indices(0, len(frames), min(self.ocr_frames, len(frames)))
        frames = frames[picks]
        if max(display_w, display_h) < self.analysis_side:  # the detector sees native pixels, never upscaled ones
            frames = scorers.resize_all(frames, (display_w, display_h))
        detector = scorers.text_detector(self.analysis_side, self.ocr_threads, self.ocr_verify)
        stats = detector.measure(frames)
        return {"text_area_max": stats.area_max, "text_area_mean": stats.area_mean, "text_boxes": stats.boxes}

    def _borders(self, grey: np.ndarray, display_w: int, display_h: int, small: bool, notes: list[str]) -> dict:
        empty = {"crop_x": None, "crop_y": None, "crop_w": None, "crop_h": None, "border_frac": NAN}
        if small:
            return empty
        box = scorers.content_box(grey, self.border_threshold)
        if box is None:
            notes.append("all sampled frames are black: no content box")
            return empty
        # Back from analysis pixels to display pixels; rounding outward keeps every content pixel.
        sx, sy = display_w / grey.shape[2], display_h / grey.shape[1]
        x0, y0 = math.floor(box[0] * sx), math.floor(box[1] * sy)
        x1 = min(display_w, math.ceil((box[0] + box[2]) * sx))
        y1 = min(display_h, math.ceil((box[1] + box[3]) * sy))
        frac = 1.0 - (x1 - x0) * (y1 - y0) / float(display_w * display_h)
        return {"crop_x": x0, "crop_y": y0, "crop_w": x1 - x0, "crop_h": y1 - y0, "border_frac": max(0.0, frac)}

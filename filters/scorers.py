"""Per-clip measurements on frames that are already decoded: motion, clarity, black borders, orientation and
on-screen text. Pure functions over numpy arrays (plus one RapidOCR wrapper), so the fused ``score`` stage,
the benchmarks and the tests call exactly the same code.

Scales, so thresholds mean the same thing for every video:
- motion is optical flow in pixels per frame on grey frames scaled to ``MOTION_WIDTH`` px wide (the width
  the shared ground truth's ``reference_motion`` uses: OpenCV Farneback, pyr 0.5, 3 levels, window 15,
  3 iterations, poly_n 5, sigma 1.2);
- clarity is the variance of the Laplacian of grey frames scaled to a fixed long side (640 px by default);
- text area is the union of detected text boxes over the frame area (0..1).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

MOTION_WIDTH = 320  # reference width for px/frame motion (matches ground_truth.json reference_motion)
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
NAN = float("nan")


def scaled_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(w, h) with the longer side equal to ``long_side`` and the aspect ratio kept (each side >= 1)."""
    scale = long_side / max(width, height, 1)
    return max(1, round(width * scale)), max(1, round(height * scale))


def width_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """(w, h) with ``w == target_width`` and the aspect ratio kept."""
    return target_width, max(1, round(height * target_width / max(width, 1)))


def to_grey(frames: np.ndarray) -> np.ndarray:
    """``[N, H, W, 3]`` RGB uint8 -> ``[N, H, W]`` uint8 luma."""
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]) if len(frames) else \
        np.zeros((0, *frames.shape[1:3]), np.uint8)


def resize_all(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize every frame of ``[N, H, W(, C)]`` to ``size`` = (w, h): area-averaging down, bilinear up."""
    if len(frames) == 0 or (frames.shape[2], frames.shape[1]) == tuple(size):
        return frames
    interp = cv2.INTER_AREA if size[0] < frames.shape[2] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, size, interpolation=interp) for f in frames])


# ---------------------------------------------------------------------------------------------------------
# Motion


@dataclass(kw_only=True, slots=True)
class MotionStats:
    mean: float  # mean |flow| over pixels and pairs, px/frame at the reference width
    p90: float  # 90th percentile over pairs of the per-pair mean |flow|
    camera: float  # mean over pairs of |median flow vector|: whole-frame (camera) motion
    moving_frac: float  # mean fraction of pixels moving faster than the threshold


@functools.lru_cache(maxsize=4)
def _dis(preset: int) -> cv2.DISOpticalFlow:
    return cv2.DISOpticalFlow_create(preset)


def dense_flow(a: np.ndarray, b: np.ndarray, method: str = "farneback") -> np.ndarray:
    """Optical flow ``[H, W, 2]`` (px/frame) from grey frame ``a`` to ``b``."""
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(a, b, None, **FARNEBACK)
    if method == "dis":
        return _dis(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)
    raise ValueError(f"unknown flow method '{method}' (use farneback or dis)")


def boost_contrast(a: np.ndarray, b: np.ndarray, target_grad: float = 3.0,
                   max_gain: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Stretch a low-contrast pair about its mean until its mean |gradient| reaches ``target_grad``.

    Farneback's solver regularises each pixel's 2x2 system with a constant, so on smooth, low-contrast
    texture it shrinks the flow towards 0 (a 2 px/frame pan of a soft texture read as 0.2). Real footage
    at 320 px has a mean |gradient| of about 3-20 grey levels per pixel and passes unchanged; flat frames
    stay flat (the gain is capped).
    """
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    grad = 0.25 * sum(float(np.abs(np.diff(f, axis=ax)).mean()) for f in (fa, fb) for ax in (0, 1)
                      if f.shape[ax] > 1)
    if grad >= target_grad or grad <= 0:
        return a, b
    gain = min(max_gain, target_grad / grad)
    mean = 0.5 * (float(fa.mean()) + float(fb.mean()))
    return tuple(np.clip((f - mean) * gain + mean, 0, 255).astype(np.uint8) for f in (fa, fb))  # type: ignore[return-value]


def motion_stats(pairs: list[tuple[np.ndarray, np.ndarray]], method: str = "farneback",
                 moving_px: float = 1.0, contrast: bool = True) -> MotionStats:
    """Flow statistics over pairs of consecutive grey frames (already at the reference width)."""
    means, cams, moving = [], [], []
    for a, b in pairs:
        if contrast:
            a, b = boost_contrast(a, b)
        flow = dense_flow(a, b, method)
        mag = np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)
        means.append(float(mag.mean()))
        cams.append(float(np.hypot(*np.median(flow.reshape(-1, 2), axis=0))))
        moving.append(float((mag > moving_px).mean()))
    if not means:
        return MotionStats(mean=NAN, p90=NAN, camera=NAN, moving_frac=NAN)
    return MotionStats(mean=float(np.mean(means)), p90=float(np.percentile(means, 90)),
                       camera=float(np.mean(cams)), moving_frac=float(np.mean(moving)))


# ---------------------------------------------------------------------------------------------------------
# Clarity, borders, orientation


def laplacian_clarity(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of one grey frame: high for sharp detail, ~0 for blur or flat."""
    return float(cv2.Laplacian(grey, cv2.CV_32F, ksize=1).var())


def content_box(greys: np.ndarray, threshold: float = 24.0) -> tuple[int, int, int, int] | None:
    """The box ``(x, y, w, h)`` inside letterbox/pillarbox bars, in the frames' pixels, or None when every
    pixel of every frame is dark.

    A row (column) is a bar when, in the brightest of the sampled frames at each pixel, 95% of its pixels
    are at or below ``threshold``: bars are black in every frame, a dark scene is rarely dark in all of them.
    Only bars touching the frame edges count.
    """
    brightest = greys.max(axis=0).astype(np.float32)
    rows = np.percentile(brightest, 95, axis=1) > threshold
    cols = np.percentile(brightest, 95, axis=0) > threshold
    if not rows.any() or not cols.any():
        return None
    top, bottom = int(np.argmax(rows)), int(len(rows) - np.argmax(rows[::-1]))
    left, right = int(np.argmax(cols)), int(len(cols) - np.argmax(cols[::-1]))
    return left, top, right - left, bottom - top


def orientation(width: int, height: int, square_tolerance: float = 0.02) -> str:
    """'landscape', 'portrait' or 'square' (aspect within ``square_tolerance`` of 1) of the displayed frame."""
    if width <= 0 or height <= 0:
        return "unknown"
    ratio = width / height
    if abs(ratio - 1.0) <= square_tolerance:
        return "square"
    return "landscape" if ratio > 1 else "portrait"


# ---------------------------------------------------------------------------------------------------------
# On-screen text


@dataclass(kw_only=True, slots=True)
class TextStats:
    area_max: float  # largest per-frame text area fraction
    area_mean: float  # mean per-frame text area fraction
    boxes: int  # most text boxes found in one frame


class TextDetector:
    """RapidOCR 3 text detection (PP-OCR DB detector; its ONNX model ships in the wheel).

    The DB detector also fires on text-like graphics. Two guards: a box whose shorter side exceeds
    ``max_line`` of the frame's shorter side is not a line of text (the detector sometimes returns one box
    over a whole test card or an upscaled blurry frame) and is dropped; ``verify`` also runs the
    recogniser and keeps only boxes whose text has a letter or digit (a solid square, a logo), at 3-5x
    the cost.
    """

    def __init__(self, side: int = 640, threads: int = 1, verify: bool = False, min_score: float = 0.5,
                 max_line: float = 0.5):
        from rapidocr import RapidOCR

        self.verify, self.min_score, self.max_line = verify, min_score, max_line
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)  # it warns on every frame without text
        self.engine = RapidOCR(params={
            "Det.limit_type": "max",  # never upscale a frame for detection; downscale to `side`
            "Det.limit_side_len": side,
            "Global.log_level": "error",
            "Global.text_score": min_score,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })

    def boxes(self, frame_rgb: np.ndarray) -> list[np.ndarray]:
        """Text boxes of one frame as ``[4, 2]`` corner arrays in its pixels."""
        out = self.engine(np.ascontiguousarray(frame_rgb[:, :, ::-1]), use_det=True, use_cls=False,
                          use_rec=self.verify)
        boxes = getattr(out, "boxes", None)
        if boxes is None or len(boxes) == 0:
            return []
        found = [np.asarray(b, np.float32) for b in boxes]
        keep = [True] * len(found)
        if self.verify:
            texts, scores = getattr(out, "txts", None) or (), getattr(out, "scores", None) or ()
            keep = [s >= self.min_score and any(ch.isalnum() for ch in t) for t, s in zip(texts, scores)]
        limit = self.max_line * min(frame_rgb.shape[:2])
        return [b for b, k in zip(found, keep) if k and min(cv2.minAreaRect(b)[1]) <= limit]

    def measure(self, frames_rgb: np.ndarray) -> TextStats:
        areas, counts = [], []
        for frame in frames_rgb:
            found = self.boxes(frame)
            counts.append(len(found))
            areas.append(box_area_fraction(found, frame.shape[1], frame.shape[0]))
        if not areas:
            return TextStats(area_max=NAN, area_mean=NAN, boxes=0)
        return TextStats(area_max=float(max(areas)), area_mean=float(np.mean(areas)), boxes=int(max(counts)))


def box_area_fraction(boxes: list[np.ndarray], width: int, height: int) -> float:
    """Area of the union of quadrilateral boxes over the frame area (overlaps counted once)."""
    if not boxes or width <= 0 or height <= 0:
        return 0.0
    mask = np.zeros((height, width), np.uint8)
    for box in boxes:  # one call per box: fillPoly with several polygons is even-odd, overlaps would cancel
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    return float(mask.mean())


@functools.lru_cache(maxsize=4)
def text_detector(side: int, threads: int, verify: bool) -> TextDetector:
    """One detector per process and setting: worker processes reuse it across batches."""
    return TextDetector(side=side, threads=threads, verify=verify)

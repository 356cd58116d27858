"""On-screen text: the union of verified text boxes over the frame area, on frames spread over the clip.

Detection is RapidOCR 3's PP-OCR DB detector (its ONNX model ships in the wheel). The detector also fires
on text-like shapes, so each box is checked: a box whose shorter side exceeds ``max_line`` of the frame's
shorter side is not a line of text (one box over a whole test card or an upscaled blurry frame), and with
``ocr_verify`` the recogniser reads each box and keeps it only when it reads a letter or digit with
confidence ``min_score`` (an aircraft in the sky, a logo, a solid shape are read as nothing or noise). The
recogniser runs on the boxes only, so frames without text cost no more. Text frames sit at the centres of
equal shares of the clip, so any span longer than ``1 / ocr_frames`` of it (a title that fades in for the
last third) holds one.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa

from filters.scorer import NAN, ClipSample, Column, Declaration, Scorer, Threshold, resize_all

FRACTION = "fraction of the frame (0..1)"


@dataclass(kw_only=True, slots=True)
class TextStats:
    area_max: float  # largest per-frame text area fraction
    area_mean: float  # mean per-frame text area fraction
    boxes: int  # most text boxes found in one frame


def is_line(box: np.ndarray, frame_w: int, frame_h: int, max_line: float = 0.5) -> bool:
    """Whether a detected quadrilateral can be a line of text: its shorter side is at most ``max_line`` of
    the frame's shorter side."""
    return min(cv2.minAreaRect(np.asarray(box, np.float32))[1]) <= max_line * min(frame_w, frame_h)


def reads_as_text(text: str, score: float, min_score: float) -> bool:
    """A recognised box is text when it reads a letter or digit with enough confidence."""
    return score >= min_score and any(ch.isalnum() for ch in text)


class TextDetector:
    """RapidOCR detection (and, with ``verify``, recognition of the detected boxes) on RGB frames."""

    def __init__(self, side: int = 640, threads: int = 1, verify: bool = True, min_score: float = 0.5,
                 max_line: float = 0.5):
        from rapidocr import RapidOCR

        self.verify, self.min_score, self.max_line = verify, min_score, max_line
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)  # it warns on every frame without text
        self.engine = RapidOCR(params={
            "Det.limit_type": "max",  # never upscale a frame for detection; downscale to `side`
            "Det.limit_side_len": side,
            "Global.log_level": "error",
            "Global.text_score": 0.0,  # every box comes back with its score; reads_as_text decides
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })

    def detect(self, frame_rgb: np.ndarray) -> tuple[list[np.ndarray], list[tuple[str, float]] | None]:
        """Every detected box (``[4, 2]`` corners, frame pixels) and, with verify, what each reads as."""
        out = self.engine(np.ascontiguousarray(frame_rgb[:, :, ::-1]), use_det=True, use_cls=False,
                          use_rec=self.verify)
        boxes = getattr(out, "boxes", None)
        if boxes is None or len(boxes) == 0:
            return [], None
        found = [np.asarray(b, np.float32) for b in boxes]
        if not self.verify:
            return found, None
        texts, scores = getattr(out, "txts", None) or (), getattr(out, "scores", None) or ()
        return found, list(zip(texts, scores))

    def boxes(self, frame_rgb: np.ndarray) -> list[np.ndarray]:
        """The text boxes of one frame that pass the checks."""
        found, reads = self.detect(frame_rgb)
        h, w = frame_rgb.shape[:2]
        keep = [is_line(b, w, h, self.max_line) for b in found]
        if reads is not None:
            keep = [k and reads_as_text(t, s, self.min_score) for k, (t, s) in zip(keep, reads)]
        return [b for b, k in zip(found, keep) if k]

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


@dataclass(kw_only=True)
class Text(Scorer):
    declaration = Declaration(name="text", stage="score", order=60, columns={
        "text_area_max": Column(pa.float64(), FRACTION, "largest per-frame text-box area / frame area"),
        "text_area_mean": Column(pa.float64(), FRACTION, "mean over the text frames"),
        "text_boxes": Column(pa.int32(), "", "most text boxes in one frame"),
    }, thresholds={
        "max_text_area": Threshold("text_area_max", "<=", float | None, f"largest per-frame text-box area, {FRACTION}",
                                   bounds=(0.0, 1.0)),
        "max_text_boxes": Threshold("text_boxes", "<=", int | None, "most text boxes in one frame"),
    })

    ocr: bool = True  # run the text detector
    ocr_frames: int = 4  # frames the detector sees, one at the centre of each quarter (~30-70 ms per 640 px frame)
    ocr_verify: bool = True  # read each detected box and keep only boxes that read as text
    ocr_threads: int = 1  # onnxruntime threads per worker; Ray runs several workers per node
    ocr_side: int = 640  # long side the detector sees (frames are never upscaled for it)

    def check(self) -> list[str]:
        if self.ocr and not 1 <= self.ocr_frames <= 64:
            return [f"'ocr_frames' must be within 1..64, got {self.ocr_frames}"]
        return []

    def wanted(self, length: int) -> list[int]:
        if not self.ocr:
            return []
        return sorted({min(length - 1, int((k + 0.5) * length / self.ocr_frames)) for k in range(self.ocr_frames)})

    def measure(self, clip: ClipSample) -> dict:
        if not self.ocr or clip.small:
            if not self.ocr:
                clip.notes.append("ocr off")
            return {"text_area_max": NAN, "text_area_mean": NAN, "text_boxes": None}
        frames = clip.frames[clip.rows_at(self.ocr_frames)]
        if max(clip.display_w, clip.display_h) < max(frames.shape[1:3]):  # native pixels, never upscaled ones
            frames = resize_all(frames, (clip.display_w, clip.display_h))
        stats = text_detector(self.ocr_side, self.ocr_threads, self.ocr_verify).measure(frames)
        return {"text_area_max": stats.area_max, "text_area_mean": stats.area_mean, "text_boxes": stats.boxes}

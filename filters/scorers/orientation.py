"""Orientation and aspect ratio of the displayed frame (rotation applied): no pixels needed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from filters.scorer import NAN, ClipSample, Column, Declaration, Scorer, Threshold

ORIENTATIONS = ("landscape", "portrait", "square")


def orientation(width: int, height: int, square_tolerance: float = 0.02) -> str:
    """'landscape', 'portrait' or 'square' (aspect within ``square_tolerance`` of 1) of the displayed frame."""
    if width <= 0 or height <= 0:
        return "unknown"
    ratio = width / height
    if abs(ratio - 1.0) <= square_tolerance:
        return "square"
    return "landscape" if ratio > 1 else "portrait"


@dataclass(kw_only=True)
class Orientation(Scorer):
    declaration = Declaration(name="orientation", stage="score", order=10, columns={
        "orientation": Column(pa.string(), "", "landscape | portrait | square (display orientation)"),
        "aspect_ratio": Column(pa.float64(), "width / height", "display aspect ratio"),
    }, thresholds={
        "orientation": Threshold("orientation", "==", Literal["any", "landscape", "portrait", "square"], "any = rule off",
                                 off="any", default="any", choices=ORIENTATIONS),
    })

    def measure(self, clip: ClipSample) -> dict:
        w, h = clip.display_w, clip.display_h
        return {"orientation": orientation(w, h), "aspect_ratio": w / h if h > 0 else NAN}

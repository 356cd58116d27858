"""Black borders: the content box inside letterbox/pillarbox bars, in display pixels.

A bar is a band of whole rows (or columns) at a frame edge that is, in every sampled frame, dark (its
brightest pixels at or below ``border_threshold``), flat (no detail along it) and constant over the clip;
and the picture must begin at a straight edge: the first line inside the bar is clearly brighter than the
bar over most of its length. Dark picture content fails one of these: a night scene or a dark room has
detail or changes over the clip, a vignette darkens only the corners, the black around a globe ends at a
round edge. Only a band that passes them all is cropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from filters.scorer import NAN, ClipSample, Column, Declaration, Scorer, Threshold

FLAT = 10.0  # grey levels: spread (p98 - p2) of a bar line, compression noise included
STEADY = 4.0  # grey levels: how much a bar line's mean may change over the clip
EDGE_STEP = 16.0  # grey levels: the first picture line is this much brighter than the bar ...
EDGE_SHARE = 0.5  # ... over at least this share of its length (in its brightest frame)


def bar_depth(lines: np.ndarray, threshold: float) -> int:
    """How many leading lines of ``lines`` ``[N frames, L lines, P pixels]`` (line 0 at the frame edge) are
    bar: dark, flat and steady in every frame, and followed by a straight picture edge (0 if not)."""
    low = np.percentile(lines, 2, axis=2)
    high = np.percentile(lines, 98, axis=2)
    means = lines.mean(axis=2)
    bar = (high <= threshold).all(axis=0) & ((high - low) <= FLAT).all(axis=0) \
        & ((means.max(axis=0) - means.min(axis=0)) <= STEADY)
    depth = int(np.argmin(bar)) if not bar.all() else len(bar)
    if depth == 0 or depth == len(bar):
        return 0
    level = float(high[:, :depth].max())
    edge = lines[:, depth, :].max(axis=0)  # the first picture line in its brightest frame
    return depth if float((edge > level + EDGE_STEP).mean()) >= EDGE_SHARE else 0


def content_box(greys: np.ndarray, threshold: float = 24.0) -> tuple[int, int, int, int] | None:
    """The box ``(x, y, w, h)`` inside the bars of grey frames ``[N, H, W]``, in their pixels; None when
    every pixel of every frame is dark (there is no picture to box)."""
    if not (greys > threshold).any():
        return None
    g = greys.astype(np.float32)
    h, w = g.shape[1:]
    # Each side as [frames, lines from the edge inward, pixels along the line], at most half the frame deep.
    top = bar_depth(g[:, : h // 2], threshold)
    bottom = bar_depth(g[:, ::-1][:, : h // 2], threshold)
    left = bar_depth(g.transpose(0, 2, 1)[:, : w // 2], threshold)
    right = bar_depth(g.transpose(0, 2, 1)[:, ::-1][:, : w // 2], threshold)
    return left, top, w - left - right, h - top - bottom


@dataclass(kw_only=True)
class Borders(Scorer):
    declaration = Declaration(name="borders", stage="score", order=20, columns={
        "crop_x": Column(pa.int32(), "px", "content box inside black bars, display pixels (null: all frames black)"),
        "crop_y": Column(pa.int32(), "px", "content box top"),
        "crop_w": Column(pa.int32(), "px", "content box width"),
        "crop_h": Column(pa.int32(), "px", "content box height"),
        "border_frac": Column(pa.float64(), "fraction of the frame (0..1)", "1 - content area / frame area"),
    }, thresholds={
        "max_border_frac": Threshold("border_frac", "<=", float | None, "black-bar share of the frame (0..1)",
                                     bounds=(0.0, 1.0)),
    })

    border_threshold: float = 24.0  # luma (0-255) at or below which a bar counts as black

    def check(self) -> list[str]:
        if not 0 <= self.border_threshold < 255:
            return [f"'border_threshold' must be within 0..255, got {self.border_threshold}"]
        return []

    def measure(self, clip: ClipSample) -> dict:
        empty = {"crop_x": None, "crop_y": None, "crop_w": None, "crop_h": None, "border_frac": NAN}
        if clip.small:
            return empty
        grey = clip.grey[clip.anchors]
        box = content_box(grey, self.border_threshold)
        if box is None:
            clip.notes.append("all sampled frames are black: no content box")
            return empty
        # Back from analysis pixels to display pixels; rounding outward keeps every content pixel.
        w, h = clip.display_w, clip.display_h
        sx, sy = w / grey.shape[2], h / grey.shape[1]
        x0, y0 = math.floor(box[0] * sx), math.floor(box[1] * sy)
        x1 = min(w, math.ceil((box[0] + box[2]) * sx))
        y1 = min(h, math.ceil((box[1] + box[3]) * sy))
        frac = 1.0 - (x1 - x0) * (y1 - y0) / float(w * h)
        return {"crop_x": x0, "crop_y": y0, "crop_w": x1 - x0, "crop_h": y1 - y0, "border_frac": max(0.0, frac)}

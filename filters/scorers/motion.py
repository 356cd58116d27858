"""Motion: optical flow in pixels per frame on grey frames scaled to 320 px wide, the width and Farneback
settings of the shared ground truth's ``reference_motion`` (pyr 0.5, 3 levels, window 15, 3 iterations,
poly_n 5, sigma 1.2), over pairs of consecutive frames spread evenly over the whole clip.

Farneback's solver regularises each pixel's 2x2 system with a constant, so on smooth, low-contrast texture
it shrinks real motion towards 0 (a 2 px/frame pan of a soft texture reads as 0.2). A pair is therefore
stretched in contrast only when its camera model (filters/scorers/camera.py: Lucas-Kanade tracks, which do
not shrink) says the camera moves and the pair is low in contrast; a static shot is always measured as it
is, so the sensor noise of an overcast sky is never amplified into motion (``camera.motion_flows``, beside
the camera model it needs). How many pairs it takes to be within 15% of the all-pairs value is measured
by bench/bench_motion_pairs.py; the ``score`` stage's ``pairs`` default comes from there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from filters.scorer import FLOW_UNIT, NAN, ClipSample, Column, Declaration, Scorer, Threshold
from filters.scorers.camera import motion_flows

PX = FLOW_UNIT


@dataclass(kw_only=True, slots=True)
class MotionStats:
    mean: float  # mean |flow| over pixels and pairs
    p90: float  # 90th percentile over pairs of the per-pair mean |flow|
    moving_frac: float  # mean fraction of pixels moving faster than the threshold


def motion_stats(flows: list[np.ndarray], moving_px: float = 1.0) -> MotionStats:
    """Flow statistics over the flow fields ``[h, w, 2]`` of a clip's pairs."""
    if not flows:
        return MotionStats(mean=NAN, p90=NAN, moving_frac=NAN)
    mags = [np.hypot(f[..., 0], f[..., 1]) for f in flows]
    means = [float(m.mean()) for m in mags]
    return MotionStats(mean=float(np.mean(means)), p90=float(np.percentile(means, 90)),
                       moving_frac=float(np.mean([(m > moving_px).mean() for m in mags])))


@dataclass(kw_only=True)
class Motion(Scorer):
    declaration = Declaration(name="motion", stage="score", order=30, columns={
        "motion_score": Column(pa.float64(), PX, "mean optical-flow magnitude over pixels and pairs"),
        "motion_p90": Column(pa.float64(), PX, "90th percentile over pairs of the per-pair mean"),
        "moving_frac": Column(pa.float64(), "fraction of pixels (0..1)", "pixels moving more than moving_px"),
    }, thresholds={
        "min_motion": Threshold("motion_score", ">=", float | None, f"mean optical flow, {PX}; ~0.05 static, > 3 fast pan"),
        "max_motion": Threshold("motion_score", "<=", float | None, f"mean optical flow, {PX}"),
    })

    moving_px: float = 1.0  # a pixel "moves" above this many px/frame (at motion_width)

    def measure(self, clip: ClipSample) -> dict:
        if not clip.small and not clip.pairs:
            clip.notes.append(f"{len(clip.frames)} frame(s) decoded: motion needs a pair of consecutive frames")
        stats = motion_stats([] if clip.small or not clip.pairs else motion_flows(clip),
                             self.moving_px)
        return {"motion_score": stats.mean, "motion_p90": stats.p90, "moving_frac": stats.moving_frac}

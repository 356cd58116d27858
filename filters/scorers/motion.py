"""Motion: optical flow in pixels per frame on grey frames scaled to 320 px wide, the width and Farneback
settings of the shared ground truth's ``reference_motion`` (pyr 0.5, 3 levels, window 15, 3 iterations,
poly_n 5, sigma 1.2), over pairs of consecutive frames spread evenly over the whole clip.

Farneback's solver regularises each pixel's 2x2 system with a constant, so on smooth, low-contrast texture
it shrinks real motion towards 0 (a 2 px/frame pan of a soft texture reads as 0.2). A pair is therefore
stretched in contrast only when its camera model (filters/scorers/camera.py: Lucas-Kanade tracks, which do
not shrink) says the camera moves and the pair is low in contrast; a static shot is always measured as it
is, so the sensor noise of an overcast sky is never amplified into motion. How many pairs it takes to be within 15% of the all-pairs value is measured by
bench/bench_motion_pairs.py; the ``score`` stage's ``pairs`` default comes from there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from filters.scorer import NAN, ClipSample, Column, Declaration, Scorer, Threshold, dense_flow

PX = "px/frame at 320 px width"
LOW_CONTRAST = 3.0  # mean |gradient| below which Farneback under-reads motion
MOVING_CAMERA = 0.25  # px/frame of camera flow from which a low-contrast pair is stretched


@dataclass(kw_only=True, slots=True)
class MotionStats:
    mean: float  # mean |flow| over pixels and pairs
    p90: float  # 90th percentile over pairs of the per-pair mean |flow|
    moving_frac: float  # mean fraction of pixels moving faster than the threshold


def mean_gradient(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |gradient| of a grey pair (grey levels per pixel): real footage at 320 px has about 3-20."""
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    return 0.25 * sum(float(np.abs(np.diff(f, axis=ax)).mean()) for f in (fa, fb) for ax in (0, 1)
                      if f.shape[ax] > 1)


def stretch_contrast(a: np.ndarray, b: np.ndarray, target_grad: float = LOW_CONTRAST,
                     max_gain: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Stretch a pair about its mean until its mean |gradient| reaches ``target_grad`` (gain capped)."""
    grad = mean_gradient(a, b)
    if grad >= target_grad or grad <= 0:
        return a, b
    gain = min(max_gain, target_grad / grad)
    mean = 0.5 * (float(a.mean()) + float(b.mean()))
    return tuple(np.clip((f.astype(np.float32) - mean) * gain + mean, 0, 255).astype(np.uint8)  # type: ignore[return-value]
                 for f in (a, b))


def motion_flows(clip: ClipSample) -> list[np.ndarray]:
    """The clip's pair flows, a low-contrast pair re-measured stretched when its camera moves (once per clip)."""
    from filters.scorers.camera import camera_models  # camera imports this module

    def compute() -> list[np.ndarray]:
        flows, grey = list(clip.flows), clip.motion_grey
        for k, ((a, b), model) in enumerate(zip(clip.pairs, camera_models(clip))):
            if model.speed >= MOVING_CAMERA and mean_gradient(grey[a], grey[b]) < LOW_CONTRAST:
                flows[k] = dense_flow(*stretch_contrast(grey[a], grey[b]), clip.flow_method)
        return flows

    return clip.shared("motion_flows", compute)


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

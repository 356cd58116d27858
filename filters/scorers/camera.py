"""Camera motion and object motion, from a robust global model fitted to each frame pair.

Per pair (grey frames at 320 px wide, as for ``motion``): a grid of points over the frame tracked with
pyramidal Lucas-Kanade (forward and back: a point without texture, or whose track does not return, is
dropped; a grid, unlike the strongest corners, covers the frame evenly, low-contrast texture too), then a
similarity (translation, rotation, uniform scale) fitted to them with RANSAC: the camera's share of the
motion, unless the still camera explains the tracks about as well at the model's own precision (so the
sub-pixel per-frame motion of handheld shake or a slow pan is kept, track noise is not). The second frame
is warped back by that model and the Farneback flow of the aligned pair is what moves in the scene:
``object_motion``.

The clip's class, from the pairs' models (speeds in px/frame at 320 px wide):
- ``static``: the median pair's camera flow is below ``static_px``;
- ``shake``: the pairs' camera motions scatter about their mean (``camera_jitter``, RMS) more than the mean
  itself is long (handheld jitter, no steady direction), and back and forth from one pair to the next (a
  camera that turns one way, then smoothly the other, is ``complex``); a pan with shake on top is a pan
  while its drift dominates the jitter;
- else the component that explains most of the mean motion, when it explains at least ``dominant`` of it:
  ``pan_left``/``pan_right`` (horizontal), ``tilt_up``/``tilt_down`` (vertical), ``zoom_in``/``zoom_out``
  (scale), ``rotate`` (roll); otherwise ``complex``.
Directions name where the camera turns, so the scene content moves the other way: in ``pan_right`` the
picture slides left, in ``tilt_up`` it slides down, in ``zoom_in`` it grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa

from filters.scorer import FLOW_UNIT, NAN, ClipSample, Column, Declaration, Scorer, Threshold, dense_flow

MOVES = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "rotate", "shake",
         "complex")
PX = FLOW_UNIT
LOW_CONTRAST = 3.0  # mean |gradient| below which Farneback under-reads motion
MOVING_CAMERA = 0.25  # px/frame of camera flow from which a low-contrast pair is stretched
LK = dict(winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))


@dataclass(frozen=True, slots=True)
class PairModel:
    """The camera's motion between two frames, about the frame centre."""

    tx: float  # content shift at the centre, px/frame (+x right, +y down)
    ty: float
    zoom: float  # scale - 1 per frame (> 0: content grows)
    rot: float  # radians per frame
    speed: float  # mean |camera flow| over the frame, px/frame
    matrix: np.ndarray  # 2x3: frame-1 points -> frame-2 points


MIN_TRACKED = 0.2  # share of the grid that must track (texture there, and the track returns)
MIN_AGREE = 0.4  # share of the tracked points that must fit the camera model
RANSAC_PX = 1.0  # px: a track within this of the model agrees with it
PREFER_STILL = 0.9  # the still camera wins when it explains this share of the model's agreeing tracks
STILL_PX = 0.15  # px: the finest tolerance the still-camera test uses (track noise on compressed footage)
SMOOTH = 0.25  # pair-to-pair change / jitter below which a wandering camera turns smoothly: complex, not shake
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def fit_camera(a: np.ndarray, b: np.ndarray, min_tracks: int = 8) -> PairModel:
    """The similarity that moves grey frame ``a`` onto ``b``, robust to moving objects (RANSAC): a model
    fewer than ``MIN_AGREE`` of the tracks agree on is no camera motion, nor one the still camera explains
    about as well. A frame without enough trackable points (flat, black, a graphic on a plain background)
    has no measurable camera motion either: identity."""
    h, w = a.shape
    matrix = IDENTITY
    step = max(4, min(w, h) // 14)
    ys, xs = np.mgrid[step // 2:h:step, step // 2:w:step]
    corners = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32).reshape(-1, 1, 2)
    if len(corners) >= min_tracks:
        ahead, ok, _ = cv2.calcOpticalFlowPyrLK(a, b, corners, None, **LK)
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(b, a, ahead, None, **LK)
        good = (ok.ravel() == 1) & (ok_back.ravel() == 1) & (np.linalg.norm((back - corners).reshape(-1, 2), axis=1) < 0.5)
        # Mostly flat frames (a graphic on a plain background) leave a few tracks on changing details: no
        # measurable camera motion.
        if good.sum() >= max(min_tracks, MIN_TRACKED * len(corners)):
            fitted, inliers = cv2.estimateAffinePartial2D(corners[good], ahead[good], method=cv2.RANSAC,
                                                          ransacReprojThreshold=RANSAC_PX, maxIters=2000, confidence=0.995)
            agree = int(inliers.sum()) if fitted is not None else 0
            # A model a minority of tracks agree on is no camera motion (changing graphics, a crowd).
            if agree >= max(min_tracks, MIN_AGREE * int(good.sum())) and not still_explains(
                    corners[good].reshape(-1, 2), ahead[good].reshape(-1, 2), fitted, inliers.ravel() == 1):
                matrix = fitted
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    rot = math.atan2(matrix[1, 0], matrix[0, 0])
    centre = np.array([w / 2, h / 2])
    shift = matrix[:, :2] @ centre + matrix[:, 2] - centre
    ys, xs = np.mgrid[0:h:max(1, h // 12), 0:w:max(1, w // 16)]
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    moved = grid @ matrix[:, :2].T + matrix[:, 2]
    speed = float(np.linalg.norm(moved - grid, axis=1).mean())
    return PairModel(tx=float(shift[0]), ty=float(shift[1]), zoom=scale - 1.0, rot=rot, speed=speed, matrix=matrix)


def still_explains(points: np.ndarray, tracked: np.ndarray, fitted: np.ndarray, inliers: np.ndarray) -> bool:
    """Whether the still camera explains the tracks about as well as the fitted model does (noise on a flat
    sky, a big object over a still background), judged at the model's own precision: within twice the
    median error of its agreeing tracks (at least ``STILL_PX``), so sub-pixel camera motion, the
    per-frame motion of handheld shake, is told from track noise rather than rounded to a still camera."""
    model_error = np.linalg.norm(points @ fitted[:, :2].T + fitted[:, 2] - tracked, axis=1)
    tolerance = min(RANSAC_PX, max(STILL_PX, 2.0 * float(np.median(model_error[inliers]))))
    still = int((np.linalg.norm(tracked - points, axis=1) < tolerance).sum())
    return still >= PREFER_STILL * int((model_error < tolerance).sum())


def camera_models(clip: ClipSample) -> list[PairModel]:
    """The camera model of each of the clip's pairs, fitted once per clip."""
    grey = clip.motion_grey
    return clip.shared("camera_models", lambda: [fit_camera(grey[a], grey[b]) for a, b in clip.pairs])


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
    def compute() -> list[np.ndarray]:
        flows, grey = list(clip.flows), clip.motion_grey
        for k, ((a, b), model) in enumerate(zip(clip.pairs, camera_models(clip))):
            if model.speed >= MOVING_CAMERA and mean_gradient(grey[a], grey[b]) < LOW_CONTRAST:
                flows[k] = dense_flow(*stretch_contrast(grey[a], grey[b]), clip.flow_method)
        return flows

    return clip.shared("motion_flows", compute)


def object_flow(a: np.ndarray, b: np.ndarray, model: PairModel, flow: np.ndarray, method: str,
                still_px: float = 0.05) -> float:
    """Mean |flow| of what moves in the scene once the camera's motion is removed: the flow of ``a`` and
    ``b`` warped back by ``model``, over the pixels the warp keeps inside the frame."""
    if model.speed < still_px:
        return float(np.hypot(flow[..., 0], flow[..., 1]).mean())
    h, w = a.shape
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # aligned(x) = b(M x)
    aligned = cv2.warpAffine(b, model.matrix, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpAffine(np.ones_like(a), model.matrix, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    inside = cv2.erode(inside, np.ones((5, 5), np.uint8)).astype(bool)
    residual = dense_flow(a, aligned, method)
    mag = np.hypot(residual[..., 0], residual[..., 1])
    return float(mag[inside].mean()) if inside.any() else NAN


def mean_reach(width: int, height: int) -> float:
    """Mean distance of a frame point from the centre: turns a zoom or roll into px/frame at the frame."""
    ys, xs = np.mgrid[0:height:max(1, height // 36), 0:width:max(1, width // 64)]
    return float(np.hypot(xs - width / 2, ys - height / 2).mean())


def camera_vectors(models: list[PairModel], width: int, height: int) -> np.ndarray:
    """``[pairs, 4]``: each pair's camera motion as (pan, tilt, zoom, roll) in px/frame at the frame (zoom and
    roll times the mean reach), in clip order."""
    reach = mean_reach(width, height)
    return np.array([[m.tx, m.ty, m.zoom * reach, m.rot * reach] for m in models]).reshape(-1, 4)


def camera_path(vectors: np.ndarray) -> tuple[np.ndarray, float]:
    """The mean of the pairs' camera vectors (the drift the camera keeps) and the RMS distance of the pairs
    from it (what shakes about it: ``camera_jitter``)."""
    if not len(vectors):
        return np.zeros(4), 0.0
    mean = vectors.mean(axis=0)
    return mean, float(np.sqrt(((vectors - mean) ** 2).sum(axis=1).mean()))


def classify(models: list[PairModel], width: int, height: int, static_px: float = 0.25,
             dominant: float = 0.6) -> str:
    """One of MOVES for a clip from its pairs' camera models (see the module docstring)."""
    if not models:
        return "static"
    if float(np.median([m.speed for m in models])) < static_px:  # a few pairs fooled by a big object do not count
        return "static"
    vectors = camera_vectors(models, width, height)
    mean, jitter = camera_path(vectors)
    if jitter > float(np.linalg.norm(mean)):  # a pan with shake on top stays a pan while its drift dominates
        # Shake goes back and forth faster than the pairs follow it: neighbouring pairs differ about as much
        # as any two do. A camera that turns one way and then slowly the other (a track following a
        # subject) changes little from one pair to the next.
        step = float(np.sqrt((np.diff(vectors, axis=0) ** 2).sum(axis=1).mean() / 2)) if len(vectors) > 1 else 0.0
        return "shake" if step >= SMOOTH * jitter else "complex"
    pan, tilt, zoom, roll = np.abs(mean)
    parts = {"pan": pan, "tilt": tilt, "zoom": zoom, "rotate": roll}
    kind = max(parts, key=parts.get)
    if parts[kind] < dominant * sum(parts.values()):
        return "complex"
    if kind == "pan":
        return "pan_right" if mean[0] < 0 else "pan_left"  # the content slides against the camera
    if kind == "tilt":
        return "tilt_up" if mean[1] > 0 else "tilt_down"
    if kind == "zoom":
        return "zoom_in" if mean[2] > 0 else "zoom_out"
    return "rotate"


@dataclass(kw_only=True)
class Camera(Scorer):
    declaration = Declaration(name="camera", stage="score", order=40, columns={
        "camera_motion": Column(pa.float64(), PX, "mean over pairs of |median flow vector| (the reference's "
                                "global_motion)"),
        "camera_move": Column(pa.string(), "", "one of " + ", ".join(MOVES)),
        "camera_speed": Column(pa.float64(), PX, "mean |flow| of the fitted camera model, over pairs"),
        "camera_jitter": Column(pa.float64(), PX, "RMS over pairs of the camera motion about its mean: "
                                "handheld shake (a tripod ~0; a big object crossing a still shot ~0.3)"),
        "object_motion": Column(pa.float64(), PX, "mean |flow| left once the camera's motion is removed"),
    }, thresholds={
        "max_camera_motion": Threshold("camera_motion", "<=", float | None, f"|median flow|, {PX}"),
        "max_camera_speed": Threshold("camera_speed", "<=", float | None, f"camera model flow, {PX}"),
        "max_camera_jitter": Threshold("camera_jitter", "<=", float | None,
                                       f"camera shake about its mean motion, {PX}; ~0 tripod, 0.4-0.8 gentle handheld"),
        "min_object_motion": Threshold("object_motion", ">=", float | None,
                                       f"scene motion after removing the camera's, {PX}"),
        "camera_moves": Threshold("camera_move", "in", list[str] | None,
                                  "keep only these camera classes, e.g. [static] for a static-camera subset",
                                  choices=MOVES),
    })

    static_px: float = 0.25  # camera flow below this (px/frame at 320 px) is a static camera
    dominant: float = 0.6  # share of the camera motion one component needs to name the move

    def check(self) -> list[str]:
        if self.static_px < 0 or not 0 < self.dominant <= 1:
            return [f"'static_px' must be >= 0 and 'dominant' within (0, 1], got {self.static_px}, {self.dominant}"]
        return []

    def measure(self, clip: ClipSample) -> dict:
        if clip.small or not clip.pairs:
            return {"camera_motion": NAN, "camera_move": None, "camera_speed": NAN, "camera_jitter": NAN,
                    "object_motion": NAN}
        grey, models, objects, medians = clip.motion_grey, camera_models(clip), [], []
        for (a, b), flow, model in zip(clip.pairs, motion_flows(clip), models):
            objects.append(object_flow(grey[a], grey[b], model, flow, clip.flow_method))
            medians.append(float(np.hypot(*np.median(flow.reshape(-1, 2), axis=0))))
        h, w = grey.shape[1:]
        return {"camera_motion": float(np.mean(medians)), "camera_move": classify(models, w, h, self.static_px,
                                                                                    self.dominant),
                "camera_speed": float(np.mean([m.speed for m in models])),
                "camera_jitter": camera_path(camera_vectors(models, w, h))[1],
                "object_motion": float(np.nanmean(objects)) if not all(map(math.isnan, objects)) else NAN}

"""Camera classes, camera speed and object motion on clips whose camera path is known by construction:
pans, tilts, zooms, rotations and shake of given parameters over textured and low-contrast scenes, and
objects moving in front of a static camera."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from filters.scorer import ClipSample
from filters.scorers.camera import Camera
from filters.scorers.motion import Motion

W, H, N = 320, 180, 8


def _texture(low_contrast: bool, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((720, 960)).astype(np.float32), (0, 0), 2.0)
    lo, hi = (118, 134) if low_contrast else (20, 235)  # low contrast: 16 grey levels in all
    return cv2.normalize(tex, None, lo, hi, cv2.NORM_MINMAX).astype(np.uint8)


def _similarity(tx: float, ty: float, scale: float, degrees: float) -> np.ndarray:
    """3x3: one frame's camera step about the frame centre; content moves by (tx, ty), grows by scale."""
    about = cv2.getRotationMatrix2D((W / 2, H / 2), degrees, scale)
    step = np.vstack([about, [0, 0, 1]])
    step[:2, 2] += (tx, ty)
    return step


def _clip(steps: list[np.ndarray], low_contrast: bool = False, square_speed: float = 0.0) -> ClipSample:
    """Frames whose content moves by ``steps[i]`` from frame i to i + 1, optionally with a bright square
    crossing at ``square_speed`` px/frame."""
    tex = _texture(low_contrast)
    place = np.array([[1.0, 0, -(tex.shape[1] - W) / 2], [0, 1.0, -(tex.shape[0] - H) / 2], [0, 0, 1]])
    frames = []
    for i in range(len(steps) + 1):
        frame = cv2.warpAffine(tex, place[:2], (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if square_speed:
            x = int(40 + square_speed * i)
            frame[70:110, x:x + 40] = 250
        frames.append(np.repeat(frame[..., None], 3, axis=2))
        if i < len(steps):
            place = steps[i] @ place
    return ClipSample(frames=np.stack(frames), indices=list(range(len(frames))), length=len(frames),
                      display_w=W, display_h=H)


def _measure(clip: ClipSample) -> dict:
    return {**Motion().measure(clip), **Camera().measure(clip)}


CASES = [  # (camera move, per-frame step: content shift x, y, scale, degrees)
    ("pan_right", (-2.0, 0.0, 1.0, 0.0)),  # the picture slides left: the camera turns right
    ("pan_left", (3.0, 0.0, 1.0, 0.0)),
    ("tilt_up", (0.0, 2.0, 1.0, 0.0)),  # the picture slides down: the camera tilts up
    ("tilt_down", (0.0, -1.5, 1.0, 0.0)),
    ("zoom_in", (0.0, 0.0, 1.015, 0.0)),
    ("zoom_out", (0.0, 0.0, 0.985, 0.0)),
    ("rotate", (0.0, 0.0, 1.0, 0.8)),
]


@pytest.mark.parametrize("low_contrast", [False, True], ids=["textured", "low-contrast"])
@pytest.mark.parametrize("move,step", CASES, ids=[c[0] for c in CASES])
def test_camera_move_of_known_steps(move: str, step: tuple, low_contrast: bool) -> None:
    out = _measure(_clip([_similarity(*step)] * N, low_contrast))
    assert out["camera_move"] == move
    tx, ty, scale, degrees = step
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    reach = float(np.hypot(xs - W / 2, ys - H / 2).mean())  # the mean distance of a pixel from the centre
    expected = math.hypot(tx, ty) + abs(scale - 1) * reach + math.radians(abs(degrees)) * reach
    assert out["camera_speed"] == pytest.approx(expected, rel=0.15)
    assert out["object_motion"] < 0.3 * expected  # nothing moves but the camera
    assert out["motion_score"] == pytest.approx(expected, rel=0.3)  # the flow sees what the camera does


@pytest.mark.parametrize("low_contrast", [False, True], ids=["textured", "low-contrast"])
def test_shake_is_jitter_without_a_direction(low_contrast: bool) -> None:
    rng = np.random.default_rng(3)
    offsets = rng.normal(0, 2.0, (N + 1, 2))  # a handheld camera about one point
    steps = [_similarity(*(offsets[i + 1] - offsets[i]), 1.0, 0.0) for i in range(N)]
    out = _measure(_clip(steps, low_contrast))
    assert out["camera_move"] == "shake"
    assert out["camera_speed"] > 1.0 and out["object_motion"] < 0.5


def test_static_camera_with_a_moving_object() -> None:
    still = _measure(_clip([_similarity(0, 0, 1, 0)] * N))
    moving = _measure(_clip([_similarity(0, 0, 1, 0)] * N, square_speed=4.0))
    assert still["camera_move"] == moving["camera_move"] == "static"
    assert still["camera_speed"] < 0.05 and still["object_motion"] < 0.05 and still["motion_score"] < 0.05
    assert moving["camera_speed"] < 0.1
    # The square (40x40 of 320x180, plus the texture it uncovers) moves: the scene moves, the camera does not.
    assert moving["object_motion"] > 0.05 and moving["object_motion"] == pytest.approx(moving["motion_score"], rel=0.1)


def test_object_motion_survives_a_pan() -> None:
    pan = _measure(_clip([_similarity(-3.0, 0, 1, 0)] * N))
    both = _measure(_clip([_similarity(-3.0, 0, 1, 0)] * N, square_speed=4.0))
    assert pan["camera_move"] == both["camera_move"] == "pan_right"
    assert both["camera_speed"] == pytest.approx(3.0, rel=0.1)
    assert both["object_motion"] > 2 * pan["object_motion"]


def test_flat_and_short_clips() -> None:
    flat = ClipSample(frames=np.full((4, H, W, 3), 90, np.uint8), indices=[0, 1, 2, 3], length=4,
                      display_w=W, display_h=H)
    out = _measure(flat)
    assert out["camera_move"] == "static" and out["camera_speed"] == 0.0 and out["motion_score"] == 0.0
    one = ClipSample(frames=np.zeros((1, H, W, 3), np.uint8), indices=[0], length=1, display_w=W, display_h=H)
    out = _measure(one)
    assert out["camera_move"] is None and math.isnan(out["camera_speed"]) and math.isnan(out["object_motion"])


# Handheld shake of known amplitude and frequency, on footage with sensor noise and JPEG compression: the
# camera's content offset (dx, dy) in px at 320 px wide as a function of the frame number (30 fps), sampled
# as the score stage samples a clip (pairs of consecutive frames spread over it).
def _random_walk(step_px: float, seed: int = 0):
    path = np.cumsum(np.random.default_rng(seed).normal(0, step_px, (200, 2)), axis=0)
    return lambda t: path[t]


def _sway(amplitude_px: float, hz: float):
    return lambda t: (amplitude_px * math.sin(2 * math.pi * hz * t / 30),
                      0.7 * amplitude_px * math.sin(2 * math.pi * 1.3 * hz * t / 30 + 1.0))


def _still(t: int) -> tuple[float, float]:
    return 0.0, 0.0


def _handheld(offset, drift_px: float = 0.0, low_contrast: bool = False, pairs: int = 16, gap: int = 4,
              noise: float = 2.0, jpeg: int = 40, seed: int = 0) -> ClipSample:
    """Pairs of frames ``gap`` apart of a camera at ``offset(t)`` plus a pan of ``drift_px`` px/frame (the
    picture slides left: pan_right), with Gaussian sensor noise and JPEG compression on every frame."""
    tex = _texture(low_contrast, seed)
    rng = np.random.default_rng(seed + 1)
    frames, indices = [], []
    for t in (t for p in range(pairs) for t in (p * gap, p * gap + 1)):
        dx, dy = offset(t)
        place = np.array([[1.0, 0, -(tex.shape[1] - W) / 2 + dx - drift_px * t],
                          [0, 1.0, -(tex.shape[0] - H) / 2 + dy]])
        frame = cv2.warpAffine(tex, place, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        frame = cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, jpeg])[1], cv2.IMREAD_GRAYSCALE)
        frames.append(np.repeat(frame[..., None], 3, axis=2))
        indices.append(t)
    return ClipSample(frames=np.stack(frames), indices=indices, length=indices[-1] + 1, display_w=W, display_h=H)


SHAKES = [  # (name, camera offset, low contrast): every one sub-pixel to ~1 px per frame
    ("walk 0.3 px/frame", _random_walk(0.3), False),
    ("walk 1 px/frame", _random_walk(1.0, seed=2), False),
    ("walk 1 px/frame, low contrast", _random_walk(1.0, seed=2), True),
    ("sway 1 px at 3 Hz", _sway(1.0, 3.0), False),
    ("sway 2 px at 2 Hz", _sway(2.0, 2.0), False),
    ("sway 3 px at 1.5 Hz, low contrast", _sway(3.0, 1.5), True),
]


@pytest.mark.parametrize("offset,low_contrast", [s[1:] for s in SHAKES], ids=[s[0] for s in SHAKES])
def test_handheld_shake_is_shake(offset, low_contrast: bool) -> None:
    """Sub-pixel per-frame motion is what a hand's tremor makes at 30 fps: the still-camera test must not
    round it to a tripod."""
    out = Camera().measure(_handheld(offset, low_contrast=low_contrast))
    assert out["camera_move"] == "shake", out
    assert out["camera_jitter"] > 0.3


@pytest.mark.parametrize("low_contrast", [False, True], ids=["textured", "low-contrast"])
def test_noisy_compressed_tripod_stays_static(low_contrast: bool) -> None:
    for seed in (0, 1):
        out = Camera().measure(_handheld(_still, low_contrast=low_contrast, noise=3.0, jpeg=25, seed=seed))
        assert out["camera_move"] == "static", out
        assert out["camera_jitter"] < 0.05 and out["camera_speed"] < 0.05


@pytest.mark.parametrize("drift,offset,move", [
    (1.5, _random_walk(0.3), "pan_right"),  # the drift dominates the shake: a pan
    (2.0, _sway(2.0, 2.0), "pan_right"),
    (0.5, _random_walk(1.0, seed=2), "shake"),  # the shake dominates a slow drift
    (0.5, _still, "pan_right"),  # a slow pan, sub-pixel per frame, is a pan (not a still camera)
], ids=["pan+walk", "pan+sway", "slow drift+walk", "slow pan"])
def test_pan_with_shake_on_top(drift: float, offset, move: str) -> None:
    out = Camera().measure(_handheld(offset, drift_px=drift))
    assert out["camera_move"] == move, out
    if move == "pan_right":
        assert out["camera_speed"] == pytest.approx(drift, rel=0.3)


@pytest.mark.parametrize("cycles,move", [(0.5, "complex"), (1.0, "complex"), (4.0, "shake")],
                         ids=["one way then back", "out and back", "four times back and forth"])
def test_a_camera_that_turns_back_smoothly_is_complex_not_shake(cycles: float, move: str) -> None:
    """The picture slides at up to 2.5 px/frame one way, slows and slides back, ``cycles`` times over a
    64-frame clip sampled as the stage samples it (32 pairs): a track following a subject when slow, shake
    when it goes back and forth faster than the pairs follow it; both scatter about their mean alike."""
    speed = lambda t: 2.5 * math.cos(2 * math.pi * cycles * t / 64)  # noqa: E731
    position = np.concatenate([[0.0], np.cumsum([speed(t) for t in range(80)])])
    out = Camera().measure(_handheld(lambda t: (position[t], 0.0), pairs=32, gap=2))
    assert out["camera_move"] == move, out
    assert out["camera_jitter"] > 1.0


def test_max_camera_jitter_rule_drops_the_shaky_clip() -> None:
    import pyarrow as pa

    from filters.filter import Filter

    shaky = Camera().measure(_handheld(_sway(2.0, 2.0)))
    tripod = Camera().measure(_handheld(_still))
    rows = pa.Table.from_pylist([{"clip_id": "shaky", **shaky}, {"clip_id": "tripod", **tripod}])
    out = {r["clip_id"]: r for r in Filter(max_camera_jitter=0.3).process_batch(rows).to_pylist()}
    assert out["tripod"]["keep"] and not out["shaky"]["keep"]
    reason = out["shaky"]["drop_reason"]
    assert reason.startswith("camera_jitter ") and reason.endswith("> max_camera_jitter 0.3"), reason


def _shaken(frames: np.ndarray, indices: list[int], offset) -> np.ndarray:
    """Real frames moved as a hand holding the camera at ``offset(t)`` would move them."""
    out = []
    for frame, t in zip(frames, indices):
        move = np.array([[1.0, 0, offset(t)[0]], [0, 1.0, offset(t)[1]]])
        out.append(cv2.warpAffine(frame, move, (frame.shape[1], frame.shape[0]), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


@pytest.mark.parametrize("name,start,end", [("traffic_camera.mp4", 0, 576), ("mmaction2-test.avi", 0, 164)])
def test_real_static_footage_shaken_by_a_known_hand(shared_videos, ground_truth, name: str, start: int,
                                                    end: int) -> None:
    """Static cameras of the shared set (cars pass; a person fills half the frame), sampled as the score
    stage samples them: static as they are, shake once moved by a known handheld sway (2 px at 2 Hz)."""
    from engine.video import open_video
    from filters.scorer import pair_anchors, width_size

    assert "static" in ground_truth[name]["ground_truth"]["camera"]
    reader = open_video(str(shared_videos / name))
    indices = sorted({i for a in pair_anchors(start, end, 32) for i in (a, a + 1)})
    probe = reader.get_frames([start])
    frames = reader.get_frames(indices, size=width_size(probe.shape[2], probe.shape[1], W))

    def measure(pixels: np.ndarray) -> dict:
        return Camera().measure(ClipSample(frames=pixels, indices=[i - start for i in indices], length=end - start,
                                           display_w=pixels.shape[2], display_h=pixels.shape[1]))

    still = measure(frames)
    assert still["camera_move"] == "static" and still["camera_jitter"] < 0.3
    shaky = measure(_shaken(frames, indices, _sway(2.0, 2.0)))
    assert shaky["camera_move"] == "shake" and shaky["camera_jitter"] > 0.3

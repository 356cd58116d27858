"""The pure measurement functions against inputs whose answer is known by construction."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from filters import scorer
from filters.scorers import borders, camera, clarity, motion, orientation, text


def _stats(pairs, method: str = "farneback") -> motion.MotionStats:
    return motion.motion_stats([scorer.dense_flow(a, b, method) for a, b in pairs])


def _texture(width: int, height: int, seed: int = 0, detail: float = 2.0) -> np.ndarray:
    """A grey random texture with structure at every scale, wider than the frame so it can slide."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height, width)).astype(np.float32) * 255
    return cv2.GaussianBlur(noise, (0, 0), detail).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("shift", [0, 1, 3, 6])
def test_motion_of_translated_pattern_is_its_speed(shift: int) -> None:
    tex = _texture(400, 180)
    a, b = tex[:, 40:360], tex[:, 40 - shift:360 - shift]  # content moves `shift` px to the right
    stats = _stats([(a, b)])
    assert stats.mean == pytest.approx(shift, abs=0.1 + 0.1 * shift)
    assert stats.moving_frac == (pytest.approx(1.0, abs=0.1) if shift > 1 else pytest.approx(0.0, abs=0.5))


def test_static_low_contrast_shot_stays_static() -> None:
    """An overcast sky: a soft, low-contrast, static picture with sensor noise. Its motion is the noise's,
    near 0; stretching its contrast before the flow (as for a moving low-contrast scene) would amplify the
    noise into motion (about 0.04 here), so a pair is stretched only when its camera moves."""
    rng = np.random.default_rng(1)
    sky = cv2.GaussianBlur(rng.random((180, 320)).astype(np.float32), (0, 0), 8.0)
    sky = cv2.normalize(sky, None, 150, 162, cv2.NORM_MINMAX)
    frames = [np.clip(sky + rng.normal(0, 1.0, sky.shape), 0, 255).astype(np.uint8) for _ in range(6)]
    clip = scorer.ClipSample(frames=np.stack([np.repeat(f[..., None], 3, axis=2) for f in frames]),
                             indices=list(range(6)), length=6, display_w=320, display_h=180)
    assert camera.mean_gradient(frames[0], frames[1]) < camera.LOW_CONTRAST  # the case the stretch is for
    assert motion.Motion().measure(clip)["motion_score"] < 0.01


def test_dis_flow_agrees_on_translation() -> None:
    tex = _texture(400, 180)
    stats = _stats([(tex[:, 40:360], tex[:, 36:356])], method="dis")
    assert stats.mean == pytest.approx(4.0, rel=0.1)


def test_static_and_flat_pairs_have_zero_motion() -> None:
    tex = _texture(320, 180)
    assert _stats([(tex, tex)]).mean < 0.01
    black = np.zeros((180, 320), np.uint8)
    assert _stats([(black, black)]).mean == 0.0
    assert math.isnan(motion.motion_stats([]).mean)


def test_clarity_falls_with_blur() -> None:
    tex = _texture(640, 360, detail=1.0)
    values = [clarity.laplacian_clarity(cv2.GaussianBlur(tex, (0, 0), s) if s else tex) for s in (0, 1, 2, 4)]
    assert values == sorted(values, reverse=True)
    assert values[0] > 5 * values[2]
    assert clarity.laplacian_clarity(np.zeros((10, 10), np.uint8)) == 0.0


def test_content_box_finds_letterbox_and_pillarbox() -> None:
    frames = np.zeros((3, 360, 640), np.uint8)
    frames[:, 45:315, :] = _texture(640, 270)[None] | 40  # letterbox: 45 px bars top and bottom
    assert borders.content_box(frames) == (0, 45, 640, 270)
    frames = np.zeros((2, 360, 640), np.uint8)
    frames[:, :, 80:560] = 200  # pillarbox
    assert borders.content_box(frames) == (80, 0, 480, 360)
    assert borders.content_box(np.zeros((2, 36, 64), np.uint8)) is None  # all black: no content box


def test_dark_scene_is_not_a_border_when_another_frame_lights_it() -> None:
    dark = np.zeros((2, 100, 100), np.uint8)
    dark[1] = 120  # the second sampled frame is bright everywhere
    assert borders.content_box(dark) == (0, 0, 100, 100)


def test_orientation() -> None:
    assert orientation.orientation(1920, 1080) == "landscape"
    assert orientation.orientation(320, 568) == "portrait"
    assert orientation.orientation(1, 1) == "square"
    assert orientation.orientation(0, 10) == "unknown"


def test_box_area_counts_overlaps_once() -> None:
    box = np.array([[10, 10], [30, 10], [30, 20], [10, 20]], np.float32)
    single = text.box_area_fraction([box], 100, 100)
    assert single == pytest.approx(21 * 11 / 10000, rel=0.01)  # fillPoly includes both edges
    assert text.box_area_fraction([box, box], 100, 100) == single
    assert text.box_area_fraction([], 100, 100) == 0.0


def _caption_frame(text: str, width: int = 640, height: int = 360) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    frame = np.full((height, width, 3), 90, np.uint8)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.2, 2)
    x, y = (width - tw) // 2, height - 40
    cv2.putText(frame, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2, cv2.LINE_AA)
    return frame, (x, y - th, tw, th + base)


def test_text_detector_finds_rendered_caption() -> None:
    frame, (x, y, w, h) = _caption_frame("HELLO CAPTION 42")
    detector = text.text_detector(640, 1, False)
    boxes = detector.boxes(frame)
    assert len(boxes) >= 1
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(b).astype(np.int32) for b in boxes], 1)
    assert mask[y:y + h, x:x + w].mean() > 0.8  # the caption is covered
    area = text.box_area_fraction(boxes, 640, 360)
    assert w * h / (640 * 360) * 0.7 < area < w * h / (640 * 360) * 2.5
    empty = detector.measure(np.full((2, 360, 640, 3), 90, np.uint8))
    assert (empty.area_max, empty.boxes) == (0.0, 0)

"""Borders that are bars: true letterbox/pillarbox bars are found exactly, over moving content too; dark
picture content (a vignette, a night scene, a dark room, a globe on black) is not a border."""

from __future__ import annotations

import cv2
import numpy as np

from filters.scorers.borders import content_box

W, H, N = 640, 360, 6


def _picture(seed: int, lo: int = 40, hi: int = 220) -> np.ndarray:
    tex = cv2.GaussianBlur(np.random.default_rng(seed).random((H, W)).astype(np.float32), (0, 0), 2.0)
    return cv2.normalize(tex, None, lo, hi, cv2.NORM_MINMAX).astype(np.uint8)


def _noisy(frame: np.ndarray, seed: int, sigma: float = 1.5) -> np.ndarray:
    """Sensor and compression noise, as decoded frames have."""
    noise = np.random.default_rng(seed).normal(0, sigma, frame.shape)
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


def test_letterbox_and_pillarbox_over_moving_content_are_exact() -> None:
    frames = np.stack([_picture(k) for k in range(N)])  # content changes every frame
    letterbox = frames.copy()
    letterbox[:, :44], letterbox[:, H - 50:] = 0, 3  # unequal bars, one not quite black
    assert content_box(np.stack([_noisy(f, k, 0.8) for k, f in enumerate(letterbox)])) == (0, 44, W, H - 94)
    pillarbox = frames.copy()
    pillarbox[:, :, :80], pillarbox[:, :, W - 80:] = 16, 16  # limited-range black
    assert content_box(pillarbox) == (80, 0, W - 160, H)
    both = frames.copy()
    both[:, :30], both[:, -30:], both[:, :, :60], both[:, :, -60:] = 0, 0, 0, 0  # windowbox
    assert content_box(both) == (60, 30, W - 120, H - 60)


def test_vignette_is_not_a_border() -> None:
    ys, xs = np.mgrid[0:H, 0:W]
    falloff = np.clip(1.1 - np.hypot((xs - W / 2) / (W / 2), (ys - H / 2) / (H / 2)), 0, 1)  # dark edges, black corners
    frames = np.stack([(_picture(k) * falloff).astype(np.uint8) for k in range(N)])
    assert content_box(frames) == (0, 0, W, H)


def test_night_scene_and_dark_room_are_not_borders() -> None:
    night = []
    for k in range(N):
        frame = _noisy(_picture(0, 0, 22), k, 2.0)  # dark, textured, noisy
        cv2.circle(frame, (100 + 40 * k, 250), 6, 255, -1)  # a moving light
        night.append(frame)
    assert content_box(np.stack(night)) == (0, 0, W, H)
    room = np.stack([_noisy(_picture(1, 0, 200), k) for k in range(N)])
    room[:, : H // 2] = (room[:, : H // 2] * np.linspace(0.05, 0.6, H // 2)[:, None]).astype(np.uint8)  # a dark ceiling
    assert content_box(room) == (0, 0, W, H)


def test_globe_on_black_is_not_a_border() -> None:
    """A bright disc on black space: rows above and below are black, flat and steady, but the picture
    begins at a round edge, not a straight one."""
    frames = np.zeros((N, H, W), np.uint8)
    for k in range(N):
        disc = np.zeros((H, W), np.uint8)
        cv2.circle(disc, (W // 2, H // 2), 140, 255, -1)
        frames[k] = np.where(disc > 0, _picture(k, 60, 230), 0)
    assert content_box(frames) == (0, 0, W, H)


def test_black_frames_have_no_box_and_a_dark_scene_lit_once_is_full() -> None:
    assert content_box(np.zeros((2, 36, 64), np.uint8)) is None
    dark = np.zeros((2, 100, 100), np.uint8)
    dark[1] = 120  # the second sampled frame is bright everywhere
    assert content_box(dark) == (0, 0, 100, 100)

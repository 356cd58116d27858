"""Synthetic shots with known boundaries and the camera motion that fools shot detectors: slow pans, zooms,
handheld shake, fast motion, one-frame flashes; joined by cuts, fades and dissolves.

Each shot is a camera moving over a large still picture (smooth texture plus shapes), so every frame is
real structure and its motion is known; the video's events are returned with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from engine.synthetic import splice_transition


@dataclass(kw_only=True, slots=True)
class Shot:
    frames: int
    seed: int
    motion: str = "static"  # static | pan | zoom | shake | fast
    speed: float = 1.0  # pan: px/frame; zoom: scale change over the shot; shake: jitter px; fast: px/frame
    flashes: tuple[int, ...] = ()  # frames (within the shot) where a white box flashes for one frame


@dataclass(kw_only=True, slots=True)
class Join:
    kind: str  # cut | dissolve | fade (through black)
    frames: int = 0


@dataclass(kw_only=True, slots=True)
class ShotTruth:
    frames: int
    cuts: list[int] = field(default_factory=list)  # first frame of each new shot
    gradual: list[list[int]] = field(default_factory=list)  # [first, last] frames that mix two pictures
    shots: list[list[int]] = field(default_factory=list)  # [first, last] clean frames of each shot


def still_picture(seed: int, width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = np.zeros((height, width, 3), np.float32)
    for octave in range(6):
        cells = 2 ** (octave + 2)
        noise = rng.random((cells, cells * width // height + 1, 3)).astype(np.float32)
        tex += cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC) / (1.6 ** octave)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    low, high = rng.random(3) * 110, 140 + rng.random(3) * 115
    img = (low + (high - low) * tex).astype(np.uint8)
    for _ in range(25):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(height // 40, height // 8))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), r, colour, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(img, (x, y), (x + 2 * r, y + r), colour, -1)
    return img


def _render(shot: Shot, width: int, height: int) -> list[np.ndarray]:
    canvas = still_picture(shot.seed, width * 3, height * 3)
    rng = np.random.default_rng(shot.seed + 7)
    cx, cy = canvas.shape[1] / 2, canvas.shape[0] / 2
    jitter = np.zeros(2)
    frames = []
    for t in range(shot.frames):
        scale, dx, dy, angle = 1.0, 0.0, 0.0, 0.0
        if shot.motion == "pan":
            dx = shot.speed * t - shot.speed * shot.frames / 2
            dy = 0.3 * dx
        elif shot.motion == "zoom":
            scale = 1.0 + shot.speed * t / max(1, shot.frames - 1)
        elif shot.motion == "shake":
            jitter = 0.7 * jitter + rng.normal(0, shot.speed, 2)
            dx, dy = jitter
            angle = float(rng.normal(0, 0.4))
        elif shot.motion == "fast":
            dx = shot.speed * t - shot.speed * shot.frames / 2
        m = cv2.getRotationMatrix2D((cx + dx, cy + dy), angle, scale)
        m[:, 2] += [width / 2 - cx - dx, height / 2 - cy - dy]
        frame = cv2.warpAffine(canvas, m, (width, height), flags=cv2.INTER_LINEAR)
        if t in shot.flashes:
            cv2.rectangle(frame, (width // 4, height // 4), (3 * width // 4, 3 * height // 4), (255, 255, 255), -1)
        frames.append(frame)
    return frames


def make_shots(path: str | Path, shots: list[Shot], joins: list[Join], width: int = 320, height: int = 180,
               fps: int = 25, fade_in: int = 0, fade_out: int = 0) -> ShotTruth:
    """Render, encode with x264 and return the truth. ``fade_in``/``fade_out``: frames of a fade from black
    at the start / to black at the end (part of the first / last shot's frames)."""
    if len(joins) != len(shots) - 1:
        raise ValueError("need one join between each pair of shots")
    out: list[np.ndarray] = []
    truth = ShotTruth(frames=0)
    for k, shot in enumerate(shots):
        frames = _render(shot, width, height)
        start = len(out)
        if k:
            join = joins[k - 1]
            if join.kind == "cut":
                truth.cuts.append(len(out))
            else:
                frames = splice_transition(out, frames, join.kind, join.frames, truth.shots, truth.gradual)
            start = len(out)
        out.extend(frames)
        truth.shots.append([start, len(out) - 1])
    for j in range(fade_in):
        out[j] = (out[j].astype(np.float32) * j / fade_in).astype(np.uint8)
    for j in range(fade_out):
        k = len(out) - fade_out + j
        out[k] = (out[k].astype(np.float32) * (fade_out - 1 - j) / fade_out).astype(np.uint8)
    if fade_in:
        truth.gradual.insert(0, [0, fade_in - 1])
        truth.shots[0][0] = fade_in
    if fade_out:
        truth.gradual.append([len(out) - fade_out, len(out) - 1])
        truth.shots[-1][1] = len(out) - fade_out - 1
    truth.frames = len(out)
    encode(path, out, fps)
    return truth


def encode(path: str | Path, frames: list[np.ndarray], fps: int, crf: int = 18) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "g": str(2 * fps)}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# The synthetic ground-truth set: every motion that fools detectors, every kind of boundary.
SHOT_SET: dict[str, tuple[list[Shot], list[Join], dict]] = {
    "pan_zoom_cuts.mp4": ([Shot(frames=90, seed=1, motion="pan", speed=0.6),
                           Shot(frames=100, seed=2, motion="zoom", speed=0.35),
                           Shot(frames=80, seed=3, motion="static")],
                          [Join(kind="cut"), Join(kind="cut")], {}),
    "shake_fast.mp4": ([Shot(frames=110, seed=4, motion="shake", speed=3.0),
                        Shot(frames=90, seed=5, motion="fast", speed=9.0)],
                       [Join(kind="cut")], {}),
    "flashes.mp4": ([Shot(frames=80, seed=6, motion="static", flashes=(30,)),
                     Shot(frames=90, seed=7, motion="pan", speed=1.0, flashes=(20, 60))],
                    [Join(kind="cut")], {}),
    "fades_dissolves.mp4": ([Shot(frames=90, seed=8, motion="pan", speed=0.5),
                             Shot(frames=100, seed=9, motion="static"),
                             Shot(frames=110, seed=10, motion="zoom", speed=0.2)],
                            [Join(kind="dissolve", frames=20), Join(kind="fade", frames=24)],
                            {"fade_in": 30, "fade_out": 60}),
}


def write_shot_set(folder: str | Path) -> dict[str, ShotTruth]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {name: make_shots(folder / name, shots, joins, **kw) for name, (shots, joins, kw) in SHOT_SET.items()}

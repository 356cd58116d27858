"""Synthetic videos with known content: the bundled demo sample and the tests' ground truth.

Each video is a list of scenes joined by transitions. A scene is a procedurally textured background (so
detectors and scorers see real structure) with a moving shape at a known speed and optional rendered
text of a known box. Transitions are hard cuts, fades through black, or cross-dissolves, and their exact
frames are returned with the video, so tests can assert against them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


@dataclass(kw_only=True, slots=True)
class Scene:
    frames: int  # length of the scene in frames
    seed: int  # picks the background texture and colours
    speed: float = 0.0  # background pan, pixels per frame (camera motion)
    object_speed: float = 3.0  # moving square, pixels per frame
    text: str = ""  # rendered in a box near the bottom
    blur: float = 0.0  # Gaussian sigma applied to the whole frame


@dataclass(kw_only=True, slots=True)
class Transition:
    kind: str  # "cut" | "fade" (through black) | "dissolve"
    frames: int = 0  # length of a fade or dissolve


@dataclass(kw_only=True, slots=True)
class GroundTruth:
    frames: int
    fps: float
    width: int
    height: int
    cuts: list[int] = field(default_factory=list)  # first frame of each new shot
    gradual: list[list[int]] = field(default_factory=list)  # [first, last] inclusive
    shots: list[list[int]] = field(default_factory=list)  # [first, last] of every scene's clean frames
    text_boxes: list[list[int] | None] = field(default_factory=list)  # per shot: [x, y, w, h] or None
    speeds: list[float] = field(default_factory=list)  # per shot: background pan px/frame


def _texture(seed: int, width: int, height: int) -> np.ndarray:
    """A smooth random landscape-like texture, twice the frame width so it can pan."""
    rng = np.random.default_rng(seed)
    tex = np.zeros((height, width * 3, 3), np.float32)
    for octave in range(5):
        cells = 2 ** (octave + 2)
        noise = rng.random((cells, cells * 3, 3)).astype(np.float32)
        tex += cv2.resize(noise, (width * 3, height), interpolation=cv2.INTER_CUBIC) / (2 ** octave)
    tex -= tex.min()
    tex /= tex.max()
    # Two colours far apart in brightness, so every scene has visible structure.
    dark, light = rng.random(3) * 90, 165 + rng.random(3) * 90
    palette = np.stack([light, dark]).astype(np.float32)
    return (palette[0] * tex + palette[1] * (1 - tex)).clip(0, 255).astype(np.uint8)


def _render_scene(scene: Scene, width: int, height: int) -> tuple[list[np.ndarray], list[int] | None]:
    tex = _texture(scene.seed, width, height)
    rng = np.random.default_rng(scene.seed + 1000)
    colour = tuple(int(c) for c in rng.integers(0, 255, 3))
    size = max(4, height // 6)
    box = None
    frames = []
    for i in range(scene.frames):
        x0 = int(round(i * scene.speed)) % (tex.shape[1] - width)
        frame = tex[:, x0: x0 + width].copy()
        ox = int(size + (i * scene.object_speed) % max(1, width - 3 * size))
        oy = height // 3
        cv2.rectangle(frame, (ox, oy), (ox + size, oy + size), colour, -1)
        if scene.text:
            scale = height / 360 * 1.2
            (tw, th), base = cv2.getTextSize(scene.text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
            x, y = (width - tw) // 2, height - 2 * th
            cv2.rectangle(frame, (x - 6, y - th - 6), (x + tw + 6, y + base + 6), (20, 20, 20), -1)
            cv2.putText(frame, scene.text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 2, cv2.LINE_AA)
            box = [x - 6, y - th - 6, tw + 12, th + base + 12]
        if scene.blur:
            frame = cv2.GaussianBlur(frame, (0, 0), scene.blur)
        frames.append(frame)
    return frames, box


def transition_frames(tail: list[np.ndarray], head: list[np.ndarray], kind: str) -> list[np.ndarray]:
    """The frames of a cross-dissolve (``kind == "dissolve"``) or a fade through black that replace the last
    frames of one shot (``tail``) and the first of the next (``head``, as many)."""
    out = []
    for j, (prev, nxt) in enumerate(zip(tail, head)):
        a = (j + 1) / (len(tail) + 1)
        prev, nxt = prev.astype(np.float32), nxt.astype(np.float32)
        if kind == "dissolve":
            mix = (1 - a) * prev + a * nxt
        else:  # through black: out over the first half, in over the second
            mix = prev * max(0.0, 1 - 2 * a) + nxt * max(0.0, 2 * a - 1)
        out.append(mix.clip(0, 255).astype(np.uint8))
    return out


def splice_transition(out: list[np.ndarray], head: list[np.ndarray], kind: str, frames: int,
                      shots: list[list[int]], gradual: list[list[int]]) -> list[np.ndarray]:
    """Join the next shot (``head``) to ``out`` by a ``frames``-long fade or dissolve that replaces the last
    frames of ``out`` and the first of ``head``; the previous shot's last clean frame (``shots[-1]``) and the
    transition's frames (appended to ``gradual``) are recorded. Returns what is left of ``head``."""
    tail = out[-frames:]
    del out[-frames:]
    shots[-1][1] -= frames
    first = len(out)
    out.extend(transition_frames(tail, head[:frames], kind))
    gradual.append([first, len(out) - 1])
    return head[frames:]


def make_video(path: str | Path, scenes: list[Scene], transitions: list[Transition], width: int = 320,
               height: int = 180, fps: int = 25, codec: str = "libx264", crf: int = 20) -> GroundTruth:
    """Render and encode the video; return where its cuts and transitions are."""
    if len(transitions) != len(scenes) - 1:
        raise ValueError("need one transition between each pair of scenes")
    rendered = [_render_scene(s, width, height) for s in scenes]
    out: list[np.ndarray] = []
    truth = GroundTruth(frames=0, fps=fps, width=width, height=height)
    for k, (frames, box) in enumerate(rendered):
        start = len(out)
        if k > 0:
            tr = transitions[k - 1]
            if tr.kind == "cut":
                truth.cuts.append(len(out))
            elif tr.kind in ("fade", "dissolve"):
                frames = splice_transition(out, frames, tr.kind, tr.frames, truth.shots, truth.gradual)
            else:
                raise ValueError(f"unknown transition '{tr.kind}'")
            start = len(out)
        out.extend(frames)
        truth.shots.append([start, len(out) - 1])
        truth.text_boxes.append(box)
        truth.speeds.append(scenes[k].speed)
    truth.frames = len(out)
    _encode(path, out, fps, codec, crf)
    return truth


def _encode(path: str | Path, frames: list[np.ndarray], fps: int, codec: str, crf: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast", "g": str(2 * fps)}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image[:, :, ::-1].copy(), format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# The bundled demo sample: a few short videos covering what the pipeline must handle.
DEMO_VIDEOS: dict[str, tuple[list[Scene], list[Transition]]] = {
    "street_cuts.mp4": (
        [Scene(frames=75, seed=1, speed=0.5), Scene(frames=100, seed=2, speed=6.0),
         Scene(frames=70, seed=3, speed=0.0, object_speed=0.0)],
        [Transition(kind="cut"), Transition(kind="cut")],
    ),
    "news_fade.mp4": (
        [Scene(frames=90, seed=4, text="BREAKING NEWS 2026"), Scene(frames=90, seed=5, speed=1.0)],
        [Transition(kind="fade", frames=20)],
    ),
    "nature_dissolve.mp4": (
        [Scene(frames=80, seed=6, speed=2.0), Scene(frames=80, seed=7, speed=0.2, blur=2.0)],
        [Transition(kind="dissolve", frames=16)],
    ),
}


def write_demo_videos(folder: str | Path) -> dict[str, GroundTruth]:
    """Write the demo videos into ``folder`` (skipping ones already there) and their ground truth."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    truth_file = folder / "ground_truth.json"
    if truth_file.exists() and all((folder / name).exists() for name in DEMO_VIDEOS):
        return {k: GroundTruth(**v) for k, v in json.loads(truth_file.read_text()).items()}
    truths = {}
    for name, (scenes, transitions) in DEMO_VIDEOS.items():
        tmp = folder / f".tmp-{name}"
        truths[name] = make_video(tmp, scenes, transitions)
        tmp.rename(folder / name)
    truth_file.write_text(json.dumps({k: asdict(v) for k, v in truths.items()}, indent=1))
    return truths

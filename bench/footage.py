"""Long synthetic footage for the pipeline benchmark: many shots of a camera moving over textured pictures.

Each shot is a pan, zoom, handheld shake or static view over an ``engine.shot_samples.still_picture`` (smooth
texture plus sharp shapes, so clarity, motion and CLIP see real structure), joined by cuts, dissolves and
fades (``engine.synthetic.transition_frames``). Frames are rendered and encoded one at a time, so an hour of
1080p needs no more memory than one shot's picture. Every video's length is known exactly (``Footage``), which
is what the benchmark's video-hours are checked against.

  python bench/footage.py OUT_DIR --minutes 32 --videos 8 --sizes 1280x720 1920x1080
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.shot_samples import still_picture  # noqa: E402
from engine.synthetic import transition_frames  # noqa: E402

MOTIONS = ("pan", "pan", "zoom", "shake", "static")  # static shots are what the motion filter removes


@dataclass(kw_only=True, slots=True)
class Footage:
    path: str
    frames: int
    fps: int
    width: int
    height: int
    shots: int

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def _picture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A still picture 3x the frame wide with many sharp shapes, so every frame has edges (clarity)."""
    canvas = still_picture(int(rng.integers(1 << 30)), width * 3, int(height * 1.3))
    h, w = canvas.shape[:2]
    for _ in range(200):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(max(2, height // 60), max(3, height // 15)))
        if rng.random() < 0.5:
            cv2.circle(canvas, (x, y), r, colour, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(canvas, (x, y), (x + 2 * r, y + r), colour, max(1, height // 180))
    return canvas


def _shot_frames(rng: np.random.Generator, width: int, height: int, frames: int):
    """Yield one shot's frames: the camera moving over a picture."""
    canvas = _picture(rng, width, height)
    motion = MOTIONS[int(rng.integers(len(MOTIONS)))]
    speed = float(rng.uniform(1.5, 5.0)) * width / 320  # px/frame chosen at 320 px wide, the motion scorer's scale
    cx, cy = canvas.shape[1] / 2, canvas.shape[0] / 2
    jitter = np.zeros(2)
    span = (canvas.shape[1] - width) / 2 - 1
    for t in range(frames):
        scale, dx, dy = 1.0, 0.0, 0.0
        if motion == "pan":  # back and forth over the picture, so the camera never stops
            dx = span - abs((speed * t) % (4 * span) - 2 * span)
        elif motion == "zoom":
            scale = 1.0 + speed / width * t  # edges move about speed / 2 px per frame
        elif motion == "shake":
            jitter = 0.7 * jitter + rng.normal(0, 0.5 * speed, 2)
            dx, dy = jitter
        m = cv2.getRotationMatrix2D((cx + dx, cy + dy), 0.0, scale)
        m[:, 2] += [width / 2 - cx - dx, height / 2 - cy - dy]
        yield cv2.warpAffine(canvas, m, (width, height), flags=cv2.INTER_LINEAR)


def write_footage(path: str | Path, seconds: float, width: int, height: int, fps: int = 25, seed: int = 0,
                  min_shot_s: float = 2.5, max_shot_s: float = 14.0, crf: int = 23) -> Footage:
    """Render and encode (H.264) about ``seconds`` of footage; returns its exact length."""
    rng = np.random.default_rng(seed)
    total = int(round(seconds * fps))
    written, shots = 0, 0
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "g": str(2 * fps)}

        def put(image: np.ndarray) -> None:
            nonlocal written
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
            written += 1

        tail: list[np.ndarray] = []  # the last frames of the previous shot, held back for a dissolve or fade
        while written + len(tail) < total:
            n = max(1, min(int(rng.uniform(min_shot_s, max_shot_s) * fps), total - written - len(tail)))
            join = str(rng.choice(["cut", "dissolve", "fade"], p=[0.7, 0.2, 0.1]))
            if not tail or n <= len(tail):
                join = "cut"
            frames = _shot_frames(rng, width, height, n)
            shots += 1
            consumed = 0 if join == "cut" else len(tail)
            if join == "cut":
                for image in tail:
                    put(image)
            else:  # the transition replaces the held tail and as many first frames of this shot
                for image in transition_frames(tail, [next(frames) for _ in tail], join):
                    put(image)
            tail = []
            hold = min(12, n // 4) if written + n < total else 0
            for i, image in enumerate(frames, start=consumed):
                if hold and i >= n - hold:
                    tail.append(image)
                else:
                    put(image)
        for image in tail:
            put(image)
        for packet in stream.encode(None):
            container.mux(packet)
    return Footage(path=str(path), frames=written, fps=fps, width=width, height=height, shots=shots)


def _one(job: tuple) -> dict:
    path, seconds, width, height, seed, shot_s = job
    tmp = Path(path).with_name(f".tmp-{Path(path).name}")
    footage = write_footage(tmp, seconds, width, height, seed=seed, min_shot_s=shot_s[0], max_shot_s=shot_s[1])
    tmp.rename(path)
    footage.path = str(path)
    return asdict(footage)


def write_footage_set(folder: str | Path, minutes: float, videos: int, sizes: list[tuple[int, int]],
                      workers: int = 1, seed: int = 0, shot_s: tuple[float, float] = (2.5, 14.0)) -> list[Footage]:
    """``videos`` files of ``minutes / videos`` each, cycling through ``sizes``; ``footage.json`` lists them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(folder / f"synthetic_{i:02d}_{w}x{h}.mp4"), minutes * 60 / videos, w, h, seed + i, shot_s)
            for i, (w, h) in ((i, sizes[i % len(sizes)]) for i in range(videos))]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            made = list(pool.map(_one, jobs))
    else:
        made = [_one(job) for job in jobs]
    (folder / "footage.json").write_text(json.dumps(made, indent=1))
    return [Footage(**m) for m in made]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--minutes", type=float, default=32.0)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"])
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    made = write_footage_set(args.out, args.minutes, args.videos, sizes, args.workers)
    print(json.dumps({"videos": len(made), "seconds": sum(f.seconds for f in made), "shots": sum(f.shots for f in made)}))


if __name__ == "__main__":
    main()

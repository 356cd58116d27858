"""Random-access decode throughput: the exact reader and the frame service against the reader they replaced.

    .venv/bin/python bench/bench_decode.py [--frames 8] [--clips 12] [--sets 10]

Two access patterns, per shared video, side by side in one run:
- ``clips``: ``--clips`` clips of 50 frames spread over the video, ``--frames`` frames of each. Before: the
  old reader opened per clip (as the encode stage did). After: one ``engine.frames.read_frames`` call for
  every clip of the video (each file opened once, the union decoded once), as every stage now does.
- ``random``: ``--sets`` sets of ``--frames`` random frame numbers, each on a freshly opened reader.

Reports frames/s (wall) and frames per CPU-second (per core: the old reader used FFmpeg's frame threads,
the new one decodes on one thread per video), and the after/before ratios. The old reader (seek to the
keyframe before each target, name frames by timestamp) is kept here for comparison only: it returns wrong
frames on AVI with packed B-frames and on damaged streams (tests/engine/test_exact_frames.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.frames import FrameRequest, read_frames  # noqa: E402
from engine.video import PyAVReader, clip_frame_indices, iter_frames, scan_packets  # noqa: E402

SHARED = REPO.parent / "shared" / "testdata" / "videos"
FILES = ["bikes.mp4", "flipping_a_pancake.mkv", "traffic_camera.mp4", "smpte-2997.mp4", "cityCC0.mpg",
         "goldeneye-vfr-drop3.mp4", "mmaction2-test.avi"]


class OldPyAVReader:
    """The reader before exact access (comparison only): seek before each run, frame threads, frames named
    by decoded timestamp, the next frame taken when the target is missing."""

    def __init__(self, path: str):
        container = av.open(path)
        self.stream = container.streams.video[0]
        self.container = container
        self.stream.thread_type = "AUTO"
        self.pts = scan_packets(self.container, self.stream).pts
        self.num_frames = len(self.pts)
        self._index_of = {p: i for i, p in enumerate(self.pts)}

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        order = sorted(set(int(i) for i in indices))
        got, decoder, position = {}, None, -1
        for target in order:
            if decoder is None or target < position or target - position > 64:
                if decoder is not None:
                    decoder.close()
                self.container.seek(int(self.pts[target]), stream=self.stream, backward=True, any_frame=False)
                decoder, position = iter_frames(self.container, self.stream), -1
            for frame in decoder:
                position = self._index_of.get(frame.pts, position + 1)
                if position >= target:
                    got[target] = frame.to_ndarray(format="rgb24")
                    break
        if decoder is not None:
            decoder.close()
        return np.stack([got[int(i)] for i in indices])

    def close(self) -> None:
        self.stream = None
        self.container.close()


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def clips_before(path: str, clips: list[list[int]]) -> None:
    for indices in clips:
        reader = OldPyAVReader(path)
        reader.get_frames(indices)
        reader.close()


def clips_after(path: str, clips: list[list[int]]) -> None:
    for clip in read_frames([FrameRequest(uri=path, indices=tuple(i)) for i in clips]):
        assert clip.error is None, clip.error


def random_sets(cls, path: str, sets: list[list[int]]) -> None:
    for indices in sets:
        reader = cls(path)
        reader.get_frames(indices)
        reader.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8, help="frames per clip or per random set")
    parser.add_argument("--clips", type=int, default=12, help="clips per file (evenly spaced, 50 frames each)")
    parser.add_argument("--sets", type=int, default=10, help="random index sets per file")
    parser.add_argument("--files", nargs="*", default=FILES, help="shared videos to read")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit("needs ../shared/testdata/videos")
    rng = np.random.default_rng(0)
    totals = {k: [0.0, 0.0, 0] for k in ("clips_before", "clips_after", "random_before", "random_after")}
    for name in args.files:
        path = str(SHARED / name)
        Path(path).read_bytes()  # warm the page cache: both sides read from memory
        reader = PyAVReader(path)
        n = reader.num_frames
        reader.close()
        span = min(n, 50)
        starts = [round(i * (n - span) / max(1, args.clips - 1)) for i in range(args.clips)]
        clips = [clip_frame_indices(s, s + span, args.frames) for s in starts]
        sets = [sorted(int(i) for i in rng.integers(0, n, args.frames)) for _ in range(args.sets)]
        row: dict = {"file": name, "frames": n}
        runs = {"clips_before": lambda: clips_before(path, clips), "clips_after": lambda: clips_after(path, clips),
                "random_before": lambda: random_sets(OldPyAVReader, path, sets),
                "random_after": lambda: random_sets(PyAVReader, path, sets)}
        counts = {"clips": sum(len(c) for c in clips), "random": sum(len(s) for s in sets)}
        for key, run in runs.items():
            wall, cpu = _timed(run)
            frames = counts[key.split("_")[0]]
            totals[key][0] += wall
            totals[key][1] += cpu
            totals[key][2] += frames
            row[f"{key}_fps"] = round(frames / wall, 1)
            row[f"{key}_fps_per_core"] = round(frames / max(cpu, 1e-9), 1)
        print(json.dumps(row))
    summary = {}
    for key, (wall, cpu, frames) in totals.items():
        summary[f"{key}_fps"] = round(frames / wall, 1)
        summary[f"{key}_fps_per_core"] = round(frames / max(cpu, 1e-9), 1)
    for pattern in ("clips", "random"):
        for unit in ("fps", "fps_per_core"):
            summary[f"{pattern}_{unit}_ratio_after_over_before"] = round(
                summary[f"{pattern}_after_{unit}"] / summary[f"{pattern}_before_{unit}"], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

"""Which frame reader should be the default? decord vs PyAV on the access pattern the scorers and encoders
use: a few frames spread over each clip (open the file, read k sorted indices from [start, end), close).

    .venv/bin/python bench/bench_decode.py [--frames 8] [--clips 12]

Prints ms per clip and frames/s per file and backend, and which backend wins overall; `open_video(...,
backend="auto")` uses that winner wherever it can decode the file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.video import DecordReader, PyAVReader, clip_frame_indices  # noqa: E402

SHARED = REPO.parent / "shared" / "testdata" / "videos"
FILES = ["bikes.mp4", "flipping_a_pancake.mkv", "traffic_camera.mp4", "smpte-2997.mp4", "cityCC0.mpg"]


def time_backend(cls, path: str, clips: list[tuple[int, int]], frames: int) -> float:
    start = time.perf_counter()
    for a, b in clips:
        reader = cls(path)
        reader.get_frames(clip_frame_indices(a, b, frames))
        reader.close()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8, help="frames read per clip")
    parser.add_argument("--clips", type=int, default=12, help="clips per file (evenly spaced, 2 s each)")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit("needs ../shared/testdata/videos")
    totals = {"decord": 0.0, "pyav": 0.0}
    rows = []
    for name in FILES:
        path = str(SHARED / name)
        n = PyAVReader(path).num_frames
        span = min(n, 50)
        starts = [round(i * (n - span) / max(1, args.clips - 1)) for i in range(args.clips)]
        clips = [(s, s + span) for s in starts]
        row = {"file": name, "frames": n}
        for backend, cls in (("decord", DecordReader), ("pyav", PyAVReader)):
            time_backend(cls, path, clips[:1], args.frames)  # warm the page cache
            seconds = time_backend(cls, path, clips, args.frames)
            totals[backend] += seconds
            row[f"{backend}_ms_per_clip"] = round(1000 * seconds / len(clips), 1)
            row[f"{backend}_frames_per_s"] = round(len(clips) * args.frames / seconds, 1)
        rows.append(row)
        print(json.dumps(row))
    winner = min(totals, key=totals.get)
    print(json.dumps({"total_seconds": {k: round(v, 2) for k, v in totals.items()}, "winner": winner,
                      "ratio": round(max(totals.values()) / min(totals.values()), 2)}))


if __name__ == "__main__":
    main()

"""Peak memory of the split on a 10-minute and a 60-minute video: flat means per-frame state is only small
scalars (the network's windows stream; no frames are kept).

The videos are 96x54 at 25 fps (decoding cost is not the point): still shots with a cut every 5 minutes,
so that the static-window gate lets most windows skip the network and an hour runs in about a minute on
two cores; the windows around each cut go through the network. Each measurement is a fresh process
(peak RSS from getrusage), side by side for the TransNetV2 split and PySceneDetect's adaptive detector.

    .venv/bin/python bench/bench_memory.py [--minutes 10,60] [--detectors transnetv2,adaptive]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FPS, WIDTH, HEIGHT, SHOT_S = 25, 96, 54, 300


def write_video(path: Path, minutes: int) -> int:
    """Still shots of SHOT_S seconds joined by cuts; returns the frame count."""
    from engine.shot_samples import still_picture

    frames = minutes * 60 * FPS
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23", "g": "250"}
        picture = None
        for i in range(frames):
            if i % (SHOT_S * FPS) == 0:
                picture = av.VideoFrame.from_ndarray(still_picture(i, WIDTH, HEIGHT), format="rgb24")
            picture.pts = None
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return frames


def measure(path: str, detector: str) -> None:
    """In a fresh process: split ``path`` and print its peak RSS and what was found."""
    import resource

    from engine.scenes import DetectorConfig, detect_transitions

    t = detect_transitions(path, DetectorConfig(detector=detector))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": round(peak_mb, 1), "frames": t.frames, "cuts": len(t.cuts),
                      "gated": t.gated_windows, "windows": t.windows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", default="10,60")
    parser.add_argument("--detectors", default="transnetv2,adaptive")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure(*args.measure)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        videos = {}
        for minutes in map(int, args.minutes.split(",")):
            path = Path(tmp) / f"still_{minutes}min.mp4"
            videos[minutes] = (str(path), write_video(path, minutes))
        for detector in args.detectors.split(","):
            for minutes, (path, frames) in videos.items():
                out = subprocess.run([sys.executable, __file__, "--measure", path, detector], capture_output=True,
                                     text=True, check=True)
                row = json.loads(out.stdout.splitlines()[-1])
                assert row["frames"] == frames, row
                results[f"{detector} {minutes} min"] = row
                print(f"{detector:12s} {minutes:3d} min  {frames:6d} frames  peak RSS {row['peak_rss_mb']:7.1f} MB"
                      f"  cuts {row['cuts']}  gated windows {row['gated']}/{row['windows']}", flush=True)
    minutes = sorted(videos)
    for detector in args.detectors.split(","):
        lo, hi = (results[f"{detector} {m} min"]["peak_rss_mb"] for m in (minutes[0], minutes[-1]))
        results[f"{detector} growth_mb"] = round(hi - lo, 1)
    print(json.dumps(results))


if __name__ == "__main__":
    main()

"""Scene-split throughput and boundary accuracy: vde's splitter against PySceneDetect, side by side.

Contenders, on the same files in one run:
  cli      `scenedetect -i FILE detect-adaptive list-scenes -n`, one process per file (how the tool is used)
  api      PySceneDetect's Python API in this process: detect(FILE, AdaptiveDetector()) (no start-up cost)
  vde-1    vde's detect_transitions in this process (one decode pass, small frames, cuts + gradual)
  vde-N    vde's splitter over a process pool, one video per task (what a Ray run on N cores does)

Files: the shared test videos with ground truth (../shared/testdata) plus synthetic videos with known cuts,
fades and dissolves (engine/synthetic.py), including long 640x360 ones where throughput, not start-up, counts.
Scores: precision/recall/F1 of scene boundaries (a hard cut within +-1 frame; a gradual transition counts as
found by any boundary inside its window +-2 frames). Reports frames/s and the ratios to cli and api.

    .venv/bin/python bench/bench_split.py [--out bench/results/split.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.synthetic import Scene, Transition, make_video  # noqa: E402
from engine.scenes import DetectorConfig, detect_transitions  # noqa: E402

SHARED = REPO.parent / "shared" / "testdata"
SHARED_FILES = ["bikes.mp4", "cityCC0.mpg", "goldeneye-vfr-drop3.mp4", "fades.mp4", "traffic_camera.mp4",
                "flipping_a_pancake.mkv", "smpte-2997.mp4", "mmaction2-test.avi", "carphone_pristine.mp4"]


def synthetic_set(folder: Path, quick: bool) -> dict[str, dict]:
    """Videos with known boundaries: short mixed ones and long 640x360 ones."""
    truth = {}
    specs = {
        "syn_mixed.mp4": ([Scene(frames=70, seed=1, speed=1), Scene(frames=80, seed=2, speed=4),
                           Scene(frames=110, seed=3, object_speed=0), Scene(frames=75, seed=4, speed=2)],
                          [Transition(kind="cut"), Transition(kind="fade", frames=20),
                           Transition(kind="dissolve", frames=16)], 320, 180),
    }
    long_scenes = 4 if quick else 12
    for n in range(2 if quick else 3):
        scenes = [Scene(frames=150 + 25 * (k % 3), seed=100 * n + k, speed=(k % 4) * 1.5) for k in range(long_scenes)]
        kinds = ["cut", "dissolve", "cut", "fade"]
        transitions = [Transition(kind=kinds[k % 4], frames=0 if kinds[k % 4] == "cut" else 18)
                       for k in range(long_scenes - 1)]
        specs[f"syn_long{n}.mp4"] = (scenes, transitions, 640, 360)
    for name, (scenes, transitions, w, h) in specs.items():
        gt = make_video(folder / name, scenes, transitions, width=w, height=h)
        truth[name] = {"frames": gt.frames, "cuts": gt.cuts, "gradual": gt.gradual}
    return truth


def shared_truth() -> dict[str, dict]:
    if not SHARED.is_dir():
        return {}
    videos = json.loads((SHARED / "ground_truth.json").read_text())["videos"]
    truth = {}
    for name in SHARED_FILES:
        gt = videos[name]["ground_truth"]
        gradual = [[0, videos[name]["technical"]["frames_decoded"] - 1]] if name == "fades.mp4" else []
        truth[name] = {"frames": videos[name]["technical"]["frames_decoded"], "cuts": gt.get("hard_cuts", []),
                       "gradual": gradual, "fades_only": name == "fades.mp4"}
    return truth


def frame_times(path: str) -> list[float]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        times = sorted(float(p.pts * stream.time_base) for p in container.demux(stream) if p.size and p.pts is not None)
    return [t - times[0] for t in times]


def to_index(seconds: float, times: list[float]) -> int:
    return min(range(len(times)), key=lambda i: abs(times[i] - seconds))


def run_cli(path: str) -> list[int]:
    out = subprocess.run([str(Path(sys.executable).parent / "scenedetect"), "-i", path, "detect-adaptive",
                          "list-scenes", "-n"], capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    times = frame_times(path)
    starts = re.findall(r"\|\s+\d+\s+\|\s+\d+\s+\|\s+(\d\d):(\d\d):(\d\d\.\d+)\s+\|", out.stdout)
    seconds = [int(h) * 3600 + int(m) * 60 + float(s) for h, m, s in starts][1:]
    return [to_index(s, times) for s in seconds]


def run_api(path: str) -> list[int]:
    from scenedetect import AdaptiveDetector, detect

    scenes = detect(path, AdaptiveDetector())
    times = frame_times(path)
    return [to_index(start.seconds, times) for start, _ in scenes[1:]]


def run_vde(path: str, decode_threads: int = 0) -> list[int]:
    found = detect_transitions(path, DetectorConfig(decode_threads=decode_threads))
    # vde's boundaries: cuts, and the first frame of every gradual transition
    return sorted(found.cuts + [first for first, _ in found.gradual])


def score(found: list[int], truth: dict) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of scene boundaries. A second boundary inside a
    transition window already found, or any boundary inside a fades-only video, is neither credit nor error."""
    targets = [(c - 1, c + 1) for c in truth["cuts"]]
    ignore = [(a, b) for a, b in truth["gradual"]] if truth.get("fades_only") else []
    targets += [] if truth.get("fades_only") else [(a - 2, b + 2) for a, b in truth["gradual"]]
    matched: set[int] = set()
    fp = 0
    for f in found:
        hit = next((i for i, (lo, hi) in enumerate(targets) if lo <= f <= hi and i not in matched), None)
        if hit is not None:
            matched.add(hit)
        elif not any(lo <= f <= hi for lo, hi in targets + ignore):
            fp += 1
    return len(matched), fp, len(targets) - len(matched)


def f1(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(2 * p * r / (p + r), 3) if p + r else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "split.json"))
    parser.add_argument("--quick", action="store_true", help="fewer and shorter synthetic videos")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        truth = {**{str(SHARED / "videos" / k): v for k, v in shared_truth().items()},
                 **{str(folder / k): v for k, v in synthetic_set(folder, args.quick).items()}}
        paths = list(truth)
        total_frames = sum(t["frames"] for t in truth.values())
        results, per_file = {}, {p: {} for p in paths}
        for name, fn in (("cli", run_cli), ("api", run_api), ("vde-1", run_vde)):
            start = time.perf_counter()
            found = {p: fn(p) for p in paths}
            seconds = time.perf_counter() - start
            tp = fp = fn_ = 0
            for p in paths:
                a, b, c = score(found[p], truth[p])
                tp, fp, fn_ = tp + a, fp + b, fn_ + c
                per_file[p][name] = found[p]
            results[name] = {"seconds": round(seconds, 2), "frames_per_s": round(total_frames / seconds, 1),
                             **f1(tp, fp, fn_)}
        start = time.perf_counter()
        with ProcessPoolExecutor(args.workers) as pool:  # one decoder thread per video: the videos run in parallel
            order = sorted(paths, key=lambda p: -truth[p]["frames"])
            found = dict(zip(order, pool.map(partial(run_vde, decode_threads=1), order)))
        seconds = time.perf_counter() - start
        results[f"vde-{args.workers}"] = {"seconds": round(seconds, 2), "frames_per_s": round(total_frames / seconds, 1)}

    for name in list(results):
        results[name]["x_cli"] = round(results[name]["frames_per_s"] / results["cli"]["frames_per_s"], 2)
        results[name]["x_api"] = round(results[name]["frames_per_s"] / results["api"]["frames_per_s"], 2)
    report = {"machine": f"{os.cpu_count()} cores", "files": len(paths), "frames": total_frames, "results": results,
              "per_file": {Path(p).name: {"truth_cuts": truth[p]["cuts"], "truth_gradual": truth[p]["gradual"], **v}
                           for p, v in per_file.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"{len(paths)} files, {total_frames} frames")
    print(f"{'contender':10s} {'seconds':>8s} {'frames/s':>9s} {'x cli':>6s} {'x api':>6s} {'P':>6s} {'R':>6s} {'F1':>6s}")
    for name, r in results.items():
        print(f"{name:10s} {r['seconds']:8.2f} {r['frames_per_s']:9.1f} {r['x_cli']:6.2f} {r['x_api']:6.2f} "
              f"{r.get('precision', ''):>6} {r.get('recall', ''):>6} {r.get('f1', ''):>6}")
    print(json.dumps({k: v for k, v in report.items() if k != "per_file"}))


if __name__ == "__main__":
    main()

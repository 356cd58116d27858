"""Shot detection, side by side in one run: event accuracy, clip purity, coverage and whole-process speed of
the `scenedetect detect-content` CLI and of vde's split with each detector.

Contenders, on the same files:
  cli               `scenedetect -i FILE detect-content list-scenes -n`, one process per file (how it is used)
  vde-<detector>    one process over all files (how `vde run` is used): transnetv2, adaptive, content, hash,
                    histogram; start-up included
Files: the shared test videos with ground truth (../shared/testdata) and the synthetic shot set
(engine/shot_samples.py: cuts, fades, dissolves, pans, zooms, shake, fast motion, one-frame flashes).

Scores (events, not boundaries): each detected cut or gradual transition is matched once to a true cut
(+-2 frames) or a true transition (its frames +-2); unmatched detections are false positives, unmatched
truths false negatives; chunk boundaries of long shots are not events. Impure clips: clips (planned by
vde's plan_clips from the detector's events, 2-10 s) that span a true cut or hold a frame of a true
transition. Shots >= 2 s covered: true shots of 2 s and more that hold at least one clip.

    .venv/bin/python bench/bench_split.py [--detectors transnetv2,adaptive] [--long 3] [--shared DIR]
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
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared" / "testdata"
SHARED_FILES = ["bikes.mp4", "cityCC0.mpg", "goldeneye-vfr-drop3.mp4", "fades.mp4", "traffic_camera.mp4",
                "flipping_a_pancake.mkv", "smpte-2997.mp4", "mmaction2-test.avi", "carphone_pristine.mp4",
                "av1_video.mkv", "h264_10bits.mp4"]
DETECTORS = ["transnetv2", "adaptive", "content", "hash", "histogram"]
FPS_GUESS = 25.0


def shared_truth(shared: Path) -> dict[str, dict]:
    if not (shared / "ground_truth.json").exists():
        return {}
    videos = json.loads((shared / "ground_truth.json").read_text())["videos"]
    truth = {}
    for name in SHARED_FILES:
        if not (shared / "videos" / name).exists():
            continue
        frames = videos[name]["technical"]["frames_decoded"]
        cuts = videos[name]["ground_truth"].get("hard_cuts", [])
        gradual = [[0, frames - 1]] if name == "fades.mp4" else []  # only fades: one transition end to end
        edges = [0, *cuts, frames]
        shots = [] if gradual else [[a, b - 1] for a, b in zip(edges[:-1], edges[1:])]
        truth[str(shared / "videos" / name)] = {"frames": frames, "cuts": cuts, "gradual": gradual, "shots": shots,
                                                "fps": _fps(videos[name]["technical"])}
    return truth


def _fps(tech: dict) -> float:
    num, _, den = str(tech.get("avg_frame_rate", "25/1")).partition("/")
    return float(num) / float(den or 1) if float(num or 0) else FPS_GUESS


def synthetic_truth(folder: Path, long_videos: int) -> dict[str, dict]:
    """The synthetic shot set, plus ``long_videos`` 2-minute 640x360 videos (throughput past start-up)."""
    from engine.shot_samples import Join, Shot, make_shots, write_shot_set

    truths = write_shot_set(folder)
    motions = ["pan", "static", "shake", "zoom", "fast"]
    for k in range(long_videos):
        shots = [Shot(frames=250, seed=1000 * k + i, motion=motions[i % 5], speed=[0.8, 0, 2.5, 0.3, 8][i % 5])
                 for i in range(12)]
        joins = [Join(kind="dissolve", frames=16) if i % 4 == 3 else Join(kind="cut") for i in range(11)]
        truths[f"long{k}.mp4"] = make_shots(folder / f"long{k}.mp4", shots, joins, width=640, height=360)
    return {str(folder / name): {"frames": t.frames, "cuts": t.cuts, "gradual": t.gradual, "shots": t.shots, "fps": 25.0}
            for name, t in truths.items()}


def run_cli(path: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "scenedetect", "-i", path, "detect-content",
                          "list-scenes", "-n"], capture_output=True, text=True, cwd=tempfile.gettempdir())
    # Start times, mapped to decoded frames by presentation time (its frame numbers sit on the nominal
    # frame-rate grid, which is not the decoded index on VFR files)
    starts = re.findall(r"\|\s+\d+\s+\|\s+\d+\s+\|\s+(\d\d):(\d\d):(\d\d\.\d+)\s+\|", out.stdout)
    times = frame_times(path)
    cuts = [int(np.argmin(np.abs(times - (int(h) * 3600 + int(m) * 60 + float(sec))))) for h, m, sec in starts][1:]
    return {"cuts": cuts, "gradual": []}


def frame_times(path: str) -> np.ndarray:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        pts = sorted(float(p.pts * stream.time_base) for p in container.demux(stream) if p.size and p.pts is not None)
    return np.asarray(pts) - pts[0]


def worker(detector: str, paths: list[str], parallel: int = 1) -> None:
    """One process, every file: what `vde run` does (start-up, imports, model load included), ``parallel``
    files at once as the split stage's ``parallel_videos`` does."""
    from concurrent.futures import ThreadPoolExecutor

    from engine.scenes import DetectorConfig, detect_transitions, plan_clips

    cfg = DetectorConfig(detector=detector, parallel_videos=max(1, parallel))

    def one(path: str) -> str:
        try:
            begun = time.perf_counter()
            t = detect_transitions(path, cfg)
            spans = [(s.start, s.end) for s in plan_clips(t, 2.0, 10.0, 16)]
            return json.dumps({"path": path, "cuts": t.cuts, "gradual": [list(g) for g in t.gradual], "spans": spans,
                               "gated": t.gated_windows, "windows": t.windows,
                               "seconds": round(time.perf_counter() - begun, 3)})
        except Exception as exc:  # noqa: BLE001 - a file that fails counts as finding nothing
            return json.dumps({"path": path, "cuts": [], "gradual": [], "spans": [], "error": str(exc)})

    with ThreadPoolExecutor(max(1, parallel)) as pool:
        for line in pool.map(one, paths):
            print(line, flush=True)


def cli_spans(found: dict, truth: dict) -> list[tuple[int, int]]:
    from engine.scenes import Transitions, plan_clips

    n, fps = truth["frames"], truth["fps"]
    t = Transitions(frames=n, times=np.arange(n) / fps, cuts=found["cuts"], gradual=[], solid=np.zeros(n, bool))
    return [(s.start, s.end) for s in plan_clips(t, 2.0, 10.0, 16)]


def score(found: dict, truth: dict, spans: list[tuple[int, int]]) -> dict:
    targets = [(c - 2, c + 2) for c in truth["cuts"]] + [(a - 2, b + 2) for a, b in truth["gradual"]]
    events = [(c, c) for c in found["cuts"]] + [tuple(g) for g in found["gradual"]]
    matched: set[int] = set()
    tp = fp = 0
    for lo, hi in sorted(events):
        hit = next((i for i, (a, b) in enumerate(targets) if i not in matched and lo <= b and a <= hi), None)
        if hit is None:
            fp += 1
        else:
            matched.add(hit)
            tp += 1
    impure = sum(any(s < c < e for c in truth["cuts"]) or any(s <= b and a < e for a, b in truth["gradual"])
                 for s, e in spans)
    long_shots = [sh for sh in truth["shots"] if (sh[1] - sh[0] + 1) / truth["fps"] >= 2.0]
    covered = sum(any(a <= s and e <= b + 1 for s, e in spans) for a, b in long_shots)
    return {"tp": tp, "fp": fp, "fn": len(targets) - len(matched), "clips": len(spans), "impure": impure,
            "long_shots": len(long_shots), "covered": covered}


def summarise(rows: list[dict], frames: int, seconds: float) -> dict:
    tot = {k: sum(r[k] for r in rows) for k in rows[0]}
    p = tot["tp"] / (tot["tp"] + tot["fp"]) if tot["tp"] + tot["fp"] else 1.0
    r = tot["tp"] / (tot["tp"] + tot["fn"]) if tot["tp"] + tot["fn"] else 1.0
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(2 * p * r / (p + r), 3) if p + r else 0.0,
            "impure": f"{tot['impure']} of {tot['clips']}", "covered": f"{tot['covered']} of {tot['long_shots']}",
            "seconds": round(seconds, 2), "frames_per_s": round(frames / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", default=",".join(DETECTORS))
    parser.add_argument("--shared", default=str(SHARED), help="folder with videos/ and ground_truth.json")
    parser.add_argument("--long", type=int, default=0, help="add this many 2-minute 640x360 synthetic videos")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "split.json"))
    parser.add_argument("--parallel", type=int, default=1, help="files split at once by vde (threads)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.worker:
        return worker(args.worker, rest, args.parallel)

    with tempfile.TemporaryDirectory() as tmp:
        truth = {**shared_truth(Path(args.shared)), **synthetic_truth(Path(tmp), args.long)}
        paths = list(truth)
        frames = sum(t["frames"] for t in truth.values())
        results, per_file = {}, {Path(p).name: {"truth_cuts": truth[p]["cuts"], "truth_gradual": truth[p]["gradual"]}
                                 for p in paths}
        begun = time.perf_counter()
        found = {}
        for p in paths:
            started = time.perf_counter()
            found[p] = run_cli(p)
            per_file[Path(p).name]["cli_seconds"] = round(time.perf_counter() - started, 3)
        seconds = time.perf_counter() - begun
        results["cli detect-content"] = summarise([score(found[p], truth[p], cli_spans(found[p], truth[p]))
                                                   for p in paths], frames, seconds)
        for p in paths:
            per_file[Path(p).name]["cli"] = found[p]["cuts"]
        for detector in args.detectors.split(","):
            begun = time.perf_counter()
            out = subprocess.run([sys.executable, __file__, "--worker", detector, "--parallel", str(args.parallel),
                                  *paths], capture_output=True,
                                 text=True, check=True,
                                 env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
            seconds = time.perf_counter() - begun
            found = {r["path"]: r for r in map(json.loads, out.stdout.splitlines())}
            results[f"vde {detector}"] = summarise([score(found[p], truth[p], found[p]["spans"]) for p in paths],
                                                   frames, seconds)
            if detector == "transnetv2":
                results[f"vde {detector}"]["gated_windows"] = f"{sum(r.get('gated', 0) for r in found.values())} of " \
                                                              f"{sum(r.get('windows', 0) for r in found.values())}"
            for p in paths:
                per_file[Path(p).name][detector] = {"cuts": found[p]["cuts"], "gradual": found[p]["gradual"],
                                                    "seconds": found[p].get("seconds")}
    cli_fps = results["cli detect-content"]["frames_per_s"]
    for r in results.values():
        r["x_cli"] = round(r["frames_per_s"] / cli_fps, 2)
    report = {"machine": f"{os.cpu_count()} cores", "files": len(paths), "frames": frames, "results": results,
              "per_file": per_file}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"{len(paths)} files, {frames} frames")
    print(f"{'contender':22s} {'P':>6s} {'R':>6s} {'F1':>6s} {'impure':>10s} {'covered':>9s} {'frames/s':>9s} {'x cli':>6s}")
    for name, r in results.items():
        print(f"{name:22s} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} {r['impure']:>10s} "
              f"{r['covered']:>9s} {r['frames_per_s']:9.1f} {r['x_cli']:6.2f}")
    print(json.dumps({k: v for k, v in report.items() if k != "per_file"}))


if __name__ == "__main__":
    main()

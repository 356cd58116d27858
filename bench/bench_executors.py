"""Local vs embedded Ray on one machine: the same `vde run` over the same videos, side by side.

    python bench/bench_executors.py [--input /work/shared/testdata/videos] [--pipeline cpu] [--repeats 1]

Each run is a fresh `vde run ... --no-progress` in its own process and output folder (wall time includes Ray's
start-up, as a user sees it). Also counts the lines of stderr that are Ray's own noise (core-worker / raylet
error lines), which a `--no-progress` run should not print. The last line is JSON with the ratio ray/local.
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

NOISE = re.compile(r"core_worker|raylet|\(pid=|gcs_|\bE\d{4} ")


def one(executor: str, pipeline: str, inputs: str, out: Path) -> dict:
    cmd = [sys.executable, "-m", "engine.cli", "run", pipeline, "--input", inputs, "--output", str(out),
           "--executor", executor, "--no-progress"]
    begun = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - begun
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    noise = [line for line in proc.stderr.splitlines() if NOISE.search(line)]
    return {"executor": executor, "seconds": round(seconds, 2), "rc": proc.returncode,
            "clips": (run.get("summary") or {}).get("clips"), "noise_lines": len(noise), "noise": noise[:5]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", default="/work/shared/testdata/videos")
    parser.add_argument("--pipeline", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    results = []
    with tempfile.TemporaryDirectory(prefix="vde-bench-exec-") as tmp:
        for r in range(args.repeats):
            for executor in ("local", "ray"):
                result = one(executor, args.pipeline, args.input, Path(tmp) / f"{executor}-{r}")
                print(result, flush=True)
                results.append(result)
    best = {e: min(x["seconds"] for x in results if x["executor"] == e) for e in ("local", "ray")}
    print(json.dumps({"bench": "executors", "cores": os.cpu_count(), "local_s": best["local"], "ray_s": best["ray"],
                      "ray_over_local": round(best["ray"] / best["local"], 2),
                      "same_clips": len({x["clips"] for x in results}) == 1,
                      "ray_noise_lines": max(x["noise_lines"] for x in results if x["executor"] == "ray")}))


if __name__ == "__main__":
    main()

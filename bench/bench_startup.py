"""Start-up of a one-file run, side by side: `vde run` of a probe + split pipeline against the
`scenedetect detect-content` CLI on the same short file, interleaved, median wall time of each (whole process).

    .venv/bin/python bench/bench_startup.py [--file VIDEO] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILE = REPO.parent / "shared" / "testdata" / "videos" / "h264_10bits.mp4"
PIPELINE = "name: probe_split\ndescription: probe and split\nstages:\n  - stage: probe\n  - stage: split\n"


def timed(cmd: list[str], env: dict) -> float:
    begun = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=tempfile.gettempdir())
    return time.perf_counter() - begun


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", default=str(FILE))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    vde, cli = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        (folder / Path(args.file).name).symlink_to(Path(args.file).resolve())
        (Path(tmp) / "p.yaml").write_text(PIPELINE)
        for k in range(args.repeat + 1):  # the first round warms the caches (and exports the network once)
            out = Path(tmp) / f"out{k}"
            v = timed([sys.executable, "-m", "engine.cli", "run", str(Path(tmp) / "p.yaml"), "--input", str(folder),
                       "--output", str(out), "--no-progress"], env)
            c = timed([sys.executable, "-m", "scenedetect", "-i", args.file, "detect-content", "list-scenes", "-n"], env)
            if k:
                vde.append(v)
                cli.append(c)
    report = {"file": Path(args.file).name, "repeat": args.repeat, "vde_run_s": round(statistics.median(vde), 3),
              "cli_s": round(statistics.median(cli), 3)}
    report["x_cli"] = round(report["vde_run_s"] / report["cli_s"], 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()

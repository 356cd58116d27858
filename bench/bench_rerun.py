"""A threshold-only rerun against a fresh run on the same inputs: what incremental recompute saves.

Runs the bundled demo pipeline (every stage, tiny models) fresh into one folder, then changes
``filter.min_motion`` and runs again into the same folder (only the filter, and the clips the new threshold
newly keeps, are computed; shards are repacked), and also runs the changed pipeline fresh into a second
folder. Prints per-run seconds, the rerun's stage_rows and, last, one JSON line with the ratio
``rerun / fresh`` (goal: <= 0.5 on the tiny demo; on a run with real model stages the rerun is a few seconds
however long the fresh run takes).

    python bench/bench_rerun.py                 # the demo sample
    python bench/bench_rerun.py --threshold 1.0 --work /tmp/vde-bench-rerun

Measured 2026-12-02 on the shared 2-core CPU development machine (loaded by other jobs), demo.yaml with
min_motion 0.05 -> 0.5: fresh run of the changed pipeline 54.3 s, threshold rerun 2.0 s (ratio 0.037); the
rerun computed the filter on 7 clips and nothing else.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.cli import main  # noqa: E402
from engine.pipeline import PIPELINE_DIR  # noqa: E402
from engine.synthetic import write_demo_videos  # noqa: E402


def timed(args: list[str]) -> float:
    begun = time.perf_counter()
    status = main(args)
    if status != 0:
        raise SystemExit(f"vde {' '.join(args)} exited {status}")
    return time.perf_counter() - begun


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/vde-bench-rerun", help="scratch folder (emptied first)")
    parser.add_argument("--threshold", type=float, default=0.5, help="the new filter.min_motion")
    opts = parser.parse_args()
    work = Path(opts.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    inputs = work / "in"
    write_demo_videos(inputs)
    base = (PIPELINE_DIR / "demo.yaml").read_text()
    if "min_motion: 0.05" not in base:
        raise SystemExit("demo.yaml no longer sets min_motion: 0.05; update the bench")
    changed = work / "changed.yaml"
    changed.write_text(base.replace("min_motion: 0.05", f"min_motion: {opts.threshold}"))
    common = ["--input", str(inputs), "--no-progress"]
    # Warm-up: builds the tiny models once so that no measured run pays for it.
    timed(["run", "demo", "--output", str(work / "warm"), *common])
    fresh = timed(["run", "demo", "--output", str(work / "out"), *common])
    rerun = timed(["run", str(changed), "--output", str(work / "out"), *common])
    fresh_changed = timed(["run", str(changed), "--output", str(work / "fresh"), *common])
    record = json.loads((work / "out" / "run.json").read_text())
    # (shards hold clip_uri, a path under each output root: tests/engine/test_rerun.py compares their bytes)
    same = (work / "out" / "manifest/funnel.json").read_bytes() == (work / "fresh" / "manifest/funnel.json").read_bytes()
    print(f"fresh {fresh:.1f} s, threshold rerun {rerun:.1f} s, fresh run of the changed pipeline {fresh_changed:.1f} s")
    print("rerun stage_rows:", record["summary"]["stage_rows"])
    print(json.dumps({"bench": "rerun", "fresh_s": round(fresh, 2), "rerun_s": round(rerun, 2),
                      "fresh_changed_s": round(fresh_changed, 2), "ratio": round(rerun / fresh_changed, 3),
                      "same_funnel_as_fresh": same, "stage_rows": record["summary"]["stage_rows"]}))


if __name__ == "__main__":
    main_bench()

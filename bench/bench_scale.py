"""How the engine's driver grows with the number of clips: the real engine over simulated inputs.

Runs ``engine.simulate``'s pipeline (virtual input files listed in a .txt; probe, split into
``--clips-per-video`` clips, score, filter, shard index: synthetic metadata, no decoding) through
``engine.run.run_pipeline`` with the chosen executor, once per size in ``--clips``, each size in a fresh
process so that its peak RSS is its own. Per size it reports the wall time (and per million clips), the
driver's peak RSS (this process only: Ray's workers are not counted), the files the output holds (total and
per million clips), the report's data loading (``dashboard.data.collect``) and a rerun's completion check
(the same command again with ``--dry-run``: ingest from cached ids and the plan over stored results). The
last line is one JSON object with every size and the ratio of seconds per million clips, largest to second.

    python bench/bench_scale.py --clips 100000,1000000
    python bench/bench_scale.py --clips 1000000 --executor ray

Measured 2026-12-02 on the shared 2-core CPU machine under heavy load (1-minute load 5-12, so wall times are
mostly waiting for a core; the driver's CPU seconds are the comparable figure), local executor, 20 clips per
video, 500 videos per work unit:

    clips  driver CPU s per M  peak RSS run  files per M  rerun check (CPU s)  peak RSS rerun check
    100k   40                  (0.36 GB all phases)  550   12.1 s wall          -
    1M     36                  (1.76 GB all phases)  18    60.6 s wall          -
    3M     38                  2.64 GB       14.7         81.8 s (36.9 CPU)    4.72 GB

The completion index (engine.completion), measured 2026-12-02 on the same machine (load about 1-2), side by
side in one run: ``rerun_check_s`` is the check from the index, ``rerun_check_stores_s`` the same check over
every stored result (the index moved aside):

    clips  check, index  peak RSS  check, stores  peak RSS
    100k   0.70 s        0.25 GB   1.88 s         0.37 GB
    1M     6.07 s        0.70 GB   20.27 s        1.79 GB

Before partitions (the engine at 2db5e3e, 8 videos per work unit): 100k clips took 232 s wall, 150,050 files
per million clips (a result part and two fsyncs per batch), a 65 s rerun check and 0.66 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class PeakRss:
    """The driver process's resident set, sampled every 50 ms (psutil), with the kernel's own maximum."""

    def __init__(self) -> None:
        import psutil

        self.process, self.peak, self.stop = psutil.Process(), 0, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def peak_mb(self) -> float:
        kernel = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB
        return max(self.peak, kernel) / 2**20


def count_files(folder: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, dirs, files in os.walk(folder):
        del dirs
        for name in files:
            counts["all"] = counts.get("all", 0) + 1
    results = folder / "_state" / "results"
    counts["results"] = sum(len(f) for _, _, f in os.walk(results)) if results.exists() else 0
    manifest = folder / "manifest"
    counts["manifest"] = sum(len(f) for _, _, f in os.walk(manifest)) if manifest.exists() else 0
    return counts


def one(clips: int, clips_per_video: int, executor_name: str, work: Path, videos_per_part: int) -> dict:
    """One size, in this process."""
    import logging

    from engine import simulate
    from engine.executors.local import LocalExecutor
    from engine.run import run_pipeline

    logging.disable(logging.WARNING)
    videos = max(1, clips // clips_per_video)
    work.mkdir(parents=True, exist_ok=True)
    inputs = simulate.write_input_list(str(work / "inputs.txt"), videos)
    output = work / "out"
    pipeline = simulate.pipeline(clips_per_video=clips_per_video)
    if executor_name == "ray":
        from engine.executors.ray_executor import RayExecutor

        executor = RayExecutor(progress=False)
    else:
        # parts of many videos: a simulated video costs microseconds, so 8 per part would measure call overhead
        executor = LocalExecutor(videos_per_part=videos_per_part, progress=False)
    record: dict = {"clips": videos * clips_per_video, "videos": videos, "executor": executor_name}
    with PeakRss() as rss:
        begun = time.perf_counter()
        summary = run_pipeline(pipeline, inputs, str(output), executor)
        record["run_s"] = round(time.perf_counter() - begun, 2)
        usage = resource.getrusage(resource.RUSAGE_SELF)  # the driver's CPU: all the work under local
        record["driver_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
        record["s_per_million_clips"] = round(record["run_s"] / (record["clips"] / 1e6), 2)
        record["clips_in_manifest"], record["kept"] = summary.clips, summary.kept
        record["driver_peak_rss_mb_run"] = round(rss.peak_mb, 1)  # the run alone (the kernel's max so far)
        rss.peak = 0
        begun = time.perf_counter()
        from dashboard.data import collect

        collect(str(output))
        record["report_data_s"] = round(time.perf_counter() - begun, 2)
        record["peak_rss_mb_report"] = round(rss.peak / 2**20, 1)
        rss.peak = 0
        begun, cpu = time.perf_counter(), time.process_time()
        plans = []
        run_pipeline(pipeline, inputs, str(output), executor, dry_run=True, on_plan=plans.append)
        record["rerun_check_s"] = round(time.perf_counter() - begun, 2)
        record["rerun_check_cpu_s"] = round(time.process_time() - cpu, 2)
        record["peak_rss_mb_rerun_check"] = round(rss.peak / 2**20, 1)
        record["rerun_pending_videos"] = len(plans[0].pending_videos)  # 0: the rerun would compute nothing
        # the same check without the completion index: the walk over every stored result
        from engine.completion import INDEX

        index = output / INDEX
        index.rename(output / "index.aside")
        rss.peak = 0
        begun, cpu = time.perf_counter(), time.process_time()
        run_pipeline(pipeline, inputs, str(output), executor, dry_run=True, on_plan=plans.append)
        record["rerun_check_stores_s"] = round(time.perf_counter() - begun, 2)
        record["rerun_check_stores_cpu_s"] = round(time.process_time() - cpu, 2)
        record["peak_rss_mb_rerun_check_stores"] = round(rss.peak / 2**20, 1)
        (output / "index.aside").rename(index)
        assert [s.reused for s in plans[0].steps] == [s.reused for s in plans[1].steps]
    files = count_files(output)
    record["files"] = files
    record["files_per_million_clips"] = round(files["all"] / (record["clips"] / 1e6), 1)
    if executor_name == "ray":
        executor.shutdown()
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", default="100000,1000000", help="sizes, comma-separated (clips per run)")
    parser.add_argument("--clips-per-video", type=int, default=20)
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--videos-per-part", type=int, default=500, help="the local executor's work unit")
    parser.add_argument("--work", default="/tmp/vde-bench-scale", help="scratch folder (emptied first)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size in this process
    opts = parser.parse_args()
    work = Path(opts.work)
    if opts.one:
        print(json.dumps(one(opts.one, opts.clips_per_video, opts.executor, work, opts.videos_per_part)), flush=True)
        return
    sizes = [int(float(s)) for s in opts.clips.split(",")]
    results = []
    for size in sizes:
        folder = work / f"{size}"
        shutil.rmtree(folder, ignore_errors=True)
        command = [sys.executable, __file__, "--one", str(size), "--clips-per-video", str(opts.clips_per_video),
                   "--executor", opts.executor, "--work", str(folder), "--videos-per-part", str(opts.videos_per_part)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            results.append({"clips": size, "failed": done.stderr.strip().splitlines()[-3:]})
            print(f"{size}: failed: {done.stderr.strip()[-2000:]}", file=sys.stderr)
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
        shutil.rmtree(folder, ignore_errors=True)
    ok = [r for r in results if "s_per_million_clips" in r]
    ratio = round(ok[-1]["s_per_million_clips"] / ok[-2]["s_per_million_clips"], 3) if len(ok) > 1 else None
    print(json.dumps({"bench": "scale", "executor": opts.executor, "load_1m": round(os.getloadavg()[0], 2),
                      "sizes": results, "s_per_million_ratio_last_two": ratio}))


if __name__ == "__main__":
    main()

"""The whole ``pipelines/stiv.yaml`` DAG on one host: input video-hours per GPU-hour, clips/s, where it waits.

Runs ``vde run PIPELINE --executor ray`` as a subprocess (so the driver's numbers are a real run's) on footage
of a known length, while a sampler thread reads NVML (SM utilisation, memory) and psutil (CPU %, summed RSS of
the process tree: driver, raylet, every Ray worker). The pipeline is a copy of ``stiv.yaml`` with its model
names pointed at local folders (``bench/real_size_models.py``) and the model-based filter rules switched off:
random weights score every clip alike, so aesthetics, CLIP consistency and dedup would keep all clips or none;
the CPU rules (size, motion, clarity, text, borders) decide as in a real run. Per-stage numbers come from
run.json's ``metrics`` where the run records them, else from its summary's ``stage_seconds``/``stage_rows``.

The last line printed is one JSON object:
  input_video_hours, wall_s, gpus, video_hours_per_gpu_hour, clips {in, kept, captioned, categorized, encoded,
  sharded}, clips_per_s {same keys}, stages {name: rows, busy_s, rows_per_s, busy_fraction, wait_s, ...},
  gpu {sm_util_mean, sm_util_p50, sm_util_steady_mean, mem_peak_mb, samples [[t, sm%, mem MB]]},
  cpu {util_mean_pct, util_peak_pct, cores}, host_rss_peak_mb, waits {stage: wait_s},
  live {stage: rows_in, rows_out, busy_s, workers, tokens, start_s, end_s, ...}: the run's --metrics-port
  counters at the last scrape (also for a run stopped at --limit-s), rows_out_over_time [[t, {stage: rows}]].

  python bench/bench_pipeline.py --tiny                                   # CPU, tiny models, 12 s of footage
  python bench/bench_pipeline.py --models /tmp/models --footage /tmp/footage --videos /data/videos \\
      --work /tmp/bench --set encode.compile=default --limit-s 540        # one GPU host

Seen 2026-12-02 on one H200 host (16 cores; torch 2.11, Ray 2.60): real-size models build in 90 s
(real_size_models.py, bf16 on the GPU, 21 GB on disk); 32 min of 720p/1080p footage (bench/footage.py, 12
workers) in 100 s. On 12 synthetic videos + the 22 shared test videos the first phase (probe -> split ->
score -> clip_score -> filter, before the dedup barrier) did not finish in 470 s. On one 160 s 720p video:
split 11.0 s (1 worker, 25 clips), score 89.8 s busy on ONE worker (3.6 s a clip) while 15 cores idled (CPU
18% mean, GPU SM ~0%). Under Ray Data a video's clips leave the split as one bundle, so one task scores
them in turn: the score stage, not the GPU, binds the first phase. (That run's score rows failed: rapidocr
needs colorlog, which the device wheel set lacked: the 3.6 s are decode, flow and a failed OCR import.)

Seen later that day, with a video's clips spread over score workers: 32 min in 8 videos, first phase 286 s
(split one video per task); 16 min in 16 videos (``live``): split 30 s on ONE worker (Ray Data had fused
probe's batch of 16 videos with the split; fixed since by re-blocking), score 153 clips on 9 workers in
119 s, clip_score 40 s beside it, first phase done at 179 s; after the barrier caption, categorize,
dsg_video and encode each took the few hundred clips in one batch, one stage after the other (GPU SM mean
4%); not finished at 315 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".webm", ".avi", ".mpg", ".mpeg", ".m4v"}
# Random weights: these rules would keep every clip or none, so the benchmark switches them off.
UNTRAINED = {"filter": {"min_aesthetic": None, "min_consistency": None}, "dedup": {"threshold": 1.0}}
# --tiny: the same DAG on a CPU with tiny models and small frames.
TINY = {
    "score": {"pairs": 4, "ocr_frames": 1, "resources": {"cpus": 1}},
    "clip_score": {"clip_model": "tiny:clip", "aesthetic_head": "tiny:aesthetic-head", "frames": 3, "device": "cpu",
                   "image_batch": 16, "decode_threads": 1, "batch_size": 8, "resources": {"cpus": 1, "gpus": 0}},
    "caption": {"model": "tiny:qwen2_5_vl", "frames": 2, "max_pixels": 12544, "max_new_tokens": 8, "gpu_batch": 8,
                "decode_threads": 1, "batch_size": 8, "device": "cpu", "resources": {"cpus": 1, "gpus": 0}},
    "categorize": {"model": "tiny:llm", "device": "cpu", "resources": {"cpus": 1, "gpus": 0}},
    "dsg_video": {"vlm": "tiny:qwen2_5_vl", "frames": 2, "max_pixels": 12544, "sample_fraction": 0.5,
                  "device": "cpu", "resources": {"cpus": 1, "gpus": 0}},
    "encode": {"vae": "tiny:sd-vae", "text_encoder": "tiny:clip-text", "buckets": ["64x64"], "num_frames": 8,
               "compile": "none", "frames_per_batch": 16, "decode_threads": 1, "batch_size": 8, "device": "cpu",
               "resources": {"cpus": 1, "gpus": 0}},
}
MODEL_KEYS = {"clip_score": {"clip_model": "clip_model", "aesthetic_head": "aesthetic_head"},
              "caption": {"model": "vlm"}, "dsg_video": {"vlm": "vlm"}, "categorize": {"model": "llm"},
              "encode": {"vae": "vae", "text_encoder": "text_encoder"}}


def bench_pipeline(base: str | Path, overrides: dict[str, dict], models: dict[str, str] | None) -> dict:
    """``base`` (a pipeline file) with ``overrides`` merged per stage and model names replaced by ``models``."""
    spec = yaml.safe_load(Path(base).read_text())
    spec["name"] = f"{spec['name']}-bench"
    for stage in spec["stages"]:
        name = stage["stage"]
        for key, model in (MODEL_KEYS.get(name, {}).items() if models else ()):
            stage[key] = models[model]
        for key, value in overrides.get(name, {}).items():
            stage[key] = {**stage.get(key, {}), **value} if isinstance(value, dict) else value
    return spec


def parse_sets(items: list[str]) -> dict[str, dict]:
    """``STAGE.KEY=VALUE`` (VALUE read as YAML) -> ``{stage: {key: value}}``."""
    out: dict[str, dict] = {}
    for item in items:
        target, _, value = item.partition("=")
        stage, _, key = target.partition(".")
        if not key or not _:
            raise SystemExit(f"--set wants STAGE.KEY=VALUE, got '{item}'")
        out.setdefault(stage, {})[key] = yaml.safe_load(value)
    return out


def merge(*layers: dict[str, dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for layer in layers:
        for stage, keys in layer.items():
            out.setdefault(stage, {}).update(keys)
    return out


LIVE_KEYS = {"vde_stage_rows_in_total": "rows_in", "vde_stage_rows_out_total": "rows_out",
             "vde_stage_busy_seconds_total": "busy_s", "vde_stage_tokens_total": "tokens",
             "vde_stage_workers": "workers", "vde_stage_queue_depth": "queue_depth",
             "vde_stage_first_call_start_seconds": "first_start", "vde_stage_last_call_end_seconds": "last_end"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> dict[str, dict[str, float]]:
    """The run's per-stage counters from its ``--metrics-port`` endpoint (engine/prometheus.py)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, float]] = {}
    text = urllib.request.urlopen(url, timeout=2).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in LIVE_KEYS and "stage" in sample.labels:
                out.setdefault(sample.labels["stage"], {})[LIVE_KEYS[sample.name]] = sample.value
    return out


def live_stages(live: dict[str, dict[str, float]], launched: float) -> dict[str, dict]:
    """Per stage from the last scrape: counters, and when its calls ran (seconds after launch). Under Ray rows
    (and their spans) reach the driver at the end of each DAG segment, so these lag by up to one segment."""
    out = {}
    for stage, m in live.items():
        start, end = m.get("first_start"), m.get("last_end")
        wall = end - start if start is not None and end is not None else None
        workers = int(m.get("workers", 0))
        out[stage] = {"rows_in": int(m.get("rows_in", 0)), "rows_out": int(m.get("rows_out", 0)), "workers": workers,
                      "busy_s": round(m.get("busy_s", 0.0), 2), "tokens": int(m.get("tokens", 0)),
                      "queue_depth": m.get("queue_depth"),
                      "start_s": round(start - launched, 1) if start is not None else None,
                      "end_s": round(end - launched, 1) if end is not None else None,
                      "busy_fraction": round(m.get("busy_s", 0.0) / (wall * workers), 3) if wall and workers else None,
                      "rows_per_s": round(m.get("rows_out", 0) / wall, 3) if wall else None}
    return out


class Sampler(threading.Thread):
    """Every ``interval`` s: NVML SM utilisation and memory of each GPU, CPU % and the process tree's RSS, and the
    run's per-stage counters from its metrics endpoint (so a run stopped at its limit still says where it was)."""

    def __init__(self, pid: int, interval: float, progress_s: float = 0.0, metrics_url: str | None = None):
        super().__init__(daemon=True)
        self.pid, self.interval, self.stop = pid, interval, threading.Event()
        self.progress_s = progress_s  # > 0: a line on stderr this often, so a long run shows it is alive
        self.gpu: list[list[float]] = []  # [t, sm %, MB used] summed over GPUs (sm: mean)
        self.cpu: list[float] = []
        self.rss_peak = 0
        self.gpus = 0
        self.metrics_url = metrics_url
        self.live: dict[str, dict[str, float]] = {}  # the last scrape
        self.rows_out: list[list] = []  # [t, {stage: rows_out}] at each progress line

    def _nvml(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            return pynvml, handles
        except Exception:  # noqa: BLE001 - no NVML (no driver, no package): the CPU numbers still stand
            return None, []

    def run(self) -> None:
        import psutil

        nvml, handles = self._nvml()
        self.gpus = len(handles)
        root = psutil.Process(self.pid)
        psutil.cpu_percent(None)
        begun = time.monotonic()
        while not self.stop.wait(self.interval):
            t = round(time.monotonic() - begun, 2)
            self.cpu.append(psutil.cpu_percent(None))
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                procs = []
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            self.rss_peak = max(self.rss_peak, rss)
            if handles:
                sm = [nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles]
                mem = [nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20 for h in handles]
                self.gpu.append([t, round(sum(sm) / len(sm), 1), round(sum(mem))])
            if self.metrics_url:
                try:
                    self.live = scrape(self.metrics_url) or self.live
                except OSError:  # not listening yet, or already gone
                    pass
            if self.progress_s and len(self.cpu) % max(1, round(self.progress_s / self.interval)) == 0:
                gpu = f" GPU {self.gpu[-1][1]:.0f}% {self.gpu[-1][2] / 1024:.1f} GB" if self.gpu else ""
                rows = {stage: int(m.get("rows_out", 0)) for stage, m in self.live.items()}
                self.rows_out.append([t, rows])
                done = " ".join(f"{stage} {n}" for stage, n in rows.items() if n)
                print(f"[bench] {t:.0f} s: CPU {self.cpu[-1]:.0f}%{gpu} RSS {rss / 2**30:.1f} GB"
                      f"{' | rows out: ' + done if done else ''}", file=sys.stderr, flush=True)


def _stats(values: list[float]) -> dict:
    import numpy as np

    if not values:
        return {"mean": None, "p50": None, "peak": None}
    a = np.asarray(values, float)
    return {"mean": round(float(a.mean()), 1), "p50": round(float(np.median(a)), 1), "peak": round(float(a.max()), 1)}


def gpu_summary(samples: list[list[float]]) -> dict:
    """Means over the run and over its steady state: from the first sample at >= 50% SM to the last one."""
    sm = [s[1] for s in samples]
    busy = [i for i, v in enumerate(sm) if v >= 50]
    steady = sm[busy[0]: busy[-1] + 1] if busy else []
    return {"sm_util_mean": _stats(sm)["mean"], "sm_util_p50": _stats(sm)["p50"],
            "sm_util_steady_mean": _stats(steady)["mean"], "steady_s": round(samples[busy[-1]][0] - samples[busy[0]][0], 1)
            if busy else 0.0, "mem_peak_mb": max((s[2] for s in samples), default=None), "samples": samples}


def read_manifest(output: Path) -> dict:
    """Counts from the run's manifests: clips in, kept, captioned, categorized, encoded, sharded; input hours."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    videos = ds.dataset(str(output / "manifest" / "videos"), format="parquet").to_table()
    clips = ds.dataset(str(output / "manifest" / "clips"), format="parquet").to_table()

    def count(column: str, test=pc.is_valid) -> int:
        if column not in clips.column_names or not clips.num_rows:
            return 0
        return int(pc.sum(pc.fill_null(test(clips.column(column)), False).cast("int64")).as_py() or 0)

    ok = pc.equal(clips.column("status"), "ok") if clips.num_rows else None
    kept = clips.filter(pc.and_(ok, pc.fill_null(clips.column("keep"), True))).num_rows if clips.num_rows else 0
    duration = pc.sum(pc.fill_null(videos.column("duration_s"), 0.0)).as_py() if videos.num_rows else 0.0
    return {"videos": videos.num_rows, "input_seconds": float(duration or 0.0),
            "clips": {"in": count("clip_id"), "kept": kept, "captioned": count("caption"),
                      "categorized": count("category"), "encoded": count("latent_ref"), "sharded": count("shard")}}


def stage_numbers(run: dict, wall: float) -> tuple[dict, dict]:
    """Per stage: rows, busy seconds, rows/s and busy fraction (run.json metrics if recorded, else summary)."""
    metrics = (run.get("metrics") or {}).get("stages") or {}
    summary = run.get("summary", {})
    stages, waits = {}, {}
    for entry in run["pipeline"]["stages"]:
        name = entry["stage"]
        m = metrics.get(name)
        if m:
            stages[name] = {k: m.get(k) for k in ("rows_in", "rows_out", "workers", "busy_s", "wall_s", "busy_fraction",
                                                  "rows_per_s", "wait_s", "queue_depth_mean", "queue_depth_max",
                                                  "queue_unit", "tokens_per_s") if k in m}
            stages[name]["source"] = "metrics"
        else:
            busy = float(summary.get("stage_seconds", {}).get(name, 0.0))
            rows = int(summary.get("stage_rows", {}).get(name, 0))
            stages[name] = {"rows_out": rows, "busy_s": round(busy, 2),
                            "rows_per_s": round(rows / wall, 3) if wall else None,  # over the run's wall time
                            "busy_fraction": round(busy / wall, 3) if wall else None,  # worker-seconds per second
                            "wait_s": None, "source": "summary"}
        waits[name] = stages[name].get("wait_s")
    return stages, waits


def run_bench(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    inputs: list[str] = []
    for folder in args.videos:
        inputs += sorted(str(p) for p in Path(folder).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    footage_seconds = None
    if args.tiny and not args.footage:
        from bench.footage import write_footage_set

        made = write_footage_set(work / "footage", args.minutes, 2, [(640, 360)], shot_s=(3.0, 5.0))
        args.footage = str(work / "footage")
        footage_seconds = sum(f.seconds for f in made)
    if args.footage:
        listing = json.loads((Path(args.footage) / "footage.json").read_text())
        inputs += [f["path"] for f in listing]
        footage_seconds = sum(f["frames"] / f["fps"] for f in listing)
    if not inputs:
        raise SystemExit("no input videos: give --footage and/or --videos")
    (work / "inputs.txt").write_text("\n".join(inputs) + "\n")
    models = json.loads((Path(args.models) / "models.json").read_text()) if args.models else None
    overrides = merge(UNTRAINED, TINY if args.tiny else {}, parse_sets(args.set))
    spec = bench_pipeline(args.pipeline, overrides, models)
    pipe = work / "pipeline.yaml"
    pipe.write_text(yaml.safe_dump(spec, sort_keys=False))
    output = work / "output"
    cmd = [sys.executable, "-m", "engine.cli", "run", str(pipe), "--input", str(work / "inputs.txt"),
           "--output", str(output), "--executor", "ray", "--no-progress", "--force"]
    metrics_url = None
    try:
        import prometheus_client  # noqa: F401 - the run serves its counters with it

        port = free_port()
        cmd += ["--metrics-port", str(port)]
        metrics_url = f"http://127.0.0.1:{port}/metrics"
    except ImportError:
        pass
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = open(work / "run.log", "w")
    begun, launched = time.monotonic(), time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    sampler = Sampler(proc.pid, args.interval, args.progress_s, metrics_url)
    sampler.start()
    try:
        rc = proc.wait(timeout=args.limit_s)
    except subprocess.TimeoutExpired:  # stop the run (driver, raylet, workers: one process group)
        import psutil

        started = psutil.Process(proc.pid).children(recursive=True)  # Ray workers sit in groups of their own
        os.killpg(proc.pid, signal.SIGKILL)
        for child in started:
            try:
                child.kill()
            except psutil.Error:
                pass
        rc = proc.wait()
    wall = time.monotonic() - begun
    sampler.stop.set()
    sampler.join()
    log.close()
    machine = {"gpus": sampler.gpus, "gpu": gpu_summary(sampler.gpu),
               "cpu": {"cores": os.cpu_count(), "util_mean_pct": _stats(sampler.cpu)["mean"],
                       "util_peak_pct": _stats(sampler.cpu)["peak"]},
               "host_rss_peak_mb": round(sampler.rss_peak / 2**20), "samples_every_s": args.interval,
               "live": live_stages(sampler.live, launched), "rows_out_over_time": sampler.rows_out}
    if args.limit_s and wall >= args.limit_s:  # what the machine did is still worth having
        return {"bench": "pipeline", "tiny": bool(args.tiny), "finished": False, "pipeline": spec["name"],
                "overrides": overrides, "limit_s": args.limit_s, "wall_s": round(wall, 1),
                "footage_video_hours": round(footage_seconds / 3600, 4) if footage_seconds is not None else None,
                **machine}
    if rc not in (0, 1):  # 1: some videos failed, which a run records and goes on from
        tail = (work / "run.log").read_text()[-3000:]
        raise SystemExit(f"vde run exited {rc}:\n{tail}")
    run = json.loads((output / "run.json").read_text())
    counts = read_manifest(output)
    run_wall = float((run.get("metrics") or {}).get("wall_s") or run["summary"]["seconds"])
    stages, waits = stage_numbers(run, run_wall)
    gpus = sampler.gpus
    hours = counts["input_seconds"] / 3600
    return {
        "bench": "pipeline", "tiny": bool(args.tiny), "finished": True, "pipeline": spec["name"],
        "overrides": overrides, "videos": counts["videos"], "input_video_hours": round(hours, 4),
        "footage_video_hours": round(footage_seconds / 3600, 4) if footage_seconds is not None else None,
        "wall_s": round(wall, 1), "run_wall_s": round(run_wall, 1),
        "video_hours_per_gpu_hour": round(hours / (wall / 3600 * gpus), 3) if gpus else None,
        "video_hours_per_hour": round(hours / (wall / 3600), 3),
        "clips": counts["clips"],
        "clips_per_s": {k: round(v / wall, 3) for k, v in counts["clips"].items()},
        "errors": {"videos": run["summary"]["videos_error"], "clips": run["summary"]["clips_error"],
                   "by_cause": run["summary"].get("errors_by_cause", {})},
        "stages": stages, "waits": waits, **machine,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny models, a few seconds of synthetic footage")
    parser.add_argument("--pipeline", default=str(ROOT / "pipelines" / "stiv.yaml"))
    parser.add_argument("--models", help="folder built by bench/real_size_models.py (its models.json)")
    parser.add_argument("--footage", help="folder written by bench/footage.py (its footage.json)")
    parser.add_argument("--videos", nargs="*", default=[], help="more folders of input videos")
    parser.add_argument("--minutes", type=float, default=0.2, help="--tiny: minutes of footage to write")
    parser.add_argument("--work", default="/tmp/vde-bench-pipeline")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                        help="override a stage setting in the benchmark's pipeline copy (VALUE is YAML)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--progress-s", type=float, default=30.0, help="a progress line on stderr this often (0: none)")
    parser.add_argument("--limit-s", type=float, default=None,
                        help="stop the run after this long and report what the machine did (finished: false)")
    args = parser.parse_args(argv)
    if not args.tiny and not args.models:
        parser.error("give --models (bench/real_size_models.py) or --tiny")
    result = run_bench(args)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

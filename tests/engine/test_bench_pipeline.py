"""bench/bench_pipeline.py --tiny: the whole stiv DAG through ``vde run --executor ray`` on a CPU, and its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("ray")
pytest.importorskip("psutil")

KEYS = ("input_video_hours", "footage_video_hours", "wall_s", "gpus", "video_hours_per_gpu_hour",
        "video_hours_per_hour", "clips", "clips_per_s", "stages", "waits", "gpu", "cpu", "host_rss_peak_mb")
COUNTS = ("in", "kept", "captioned", "categorized", "encoded", "sharded")
STAGES = ("probe", "split", "score", "clip_score", "filter", "dedup", "caption", "categorize", "dsg_video",
          "encode", "shard")


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory) -> tuple[dict, Path]:
    work = tmp_path_factory.mktemp("bench-pipeline")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_pipeline.py"), "--tiny", "--work", str(work)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), work


def test_every_key_is_there(tiny_result):
    result, _ = tiny_result
    for key in KEYS:
        assert key in result, key
    assert set(COUNTS) <= set(result["clips"]) and set(COUNTS) <= set(result["clips_per_s"])
    assert set(STAGES) == set(result["stages"]) == set(result["waits"])
    for name, numbers in result["stages"].items():
        for key in ("busy_s", "rows_per_s", "busy_fraction", "wait_s"):
            assert key in numbers, (name, key)
    for key in ("sm_util_mean", "sm_util_steady_mean", "mem_peak_mb", "samples"):
        assert key in result["gpu"]
    assert result["cpu"]["util_mean_pct"] is not None and result["host_rss_peak_mb"] > 100  # driver + Ray workers


def test_the_live_counters_agree_with_the_run(tiny_result):
    """Scraped from the run's --metrics-port while it went on: the stages before the dedup barrier had sent all
    their rows long before the run ended, so the last scrape has them exactly; no stage shows more than it did."""
    result, _ = tiny_result
    live, stages = result["live"], result["stages"]
    assert set(live) == set(STAGES)
    for name in ("probe", "split", "score", "clip_score", "filter"):
        assert live[name]["rows_out"] == stages[name]["rows_out"] > 0, name
        assert 0 <= live[name]["start_s"] <= live[name]["end_s"] <= result["wall_s"], name
    for name, numbers in live.items():
        assert numbers["rows_out"] <= stages[name]["rows_out"], name
    assert live["split"]["start_s"] <= live["score"]["start_s"]  # a clip is scored after its video is split


def test_counts_are_consistent_with_the_footage(tiny_result):
    result, work = tiny_result
    listing = json.loads((work / "footage" / "footage.json").read_text())
    known_hours = sum(f["frames"] / f["fps"] for f in listing) / 3600
    assert result["footage_video_hours"] == pytest.approx(known_hours, abs=1e-4)
    # the run's own probe measured the same length (timestamps: within a frame per video)
    assert result["input_video_hours"] == pytest.approx(known_hours, abs=len(listing) / 25 / 3600 + 1e-4)
    c = result["clips"]
    assert c["in"] >= c["kept"] >= c["captioned"] >= c["categorized"]
    assert c["kept"] >= c["encoded"] >= c["sharded"]
    assert c["in"] >= len(listing)  # every shot of >= 2.5 s gives a clip
    assert c["captioned"] > 0 and c["encoded"] > 0  # the tiny footage passes the CPU rules
    for key, n in c.items():
        assert result["clips_per_s"][key] == pytest.approx(n / result["wall_s"], rel=0.01, abs=1e-3)
    assert result["stages"]["split"]["rows_out"] >= c["in"] or result["stages"]["split"].get("source") == "metrics"
    assert result["stages"]["caption"]["busy_s"] > 0
    # both rounded in the JSON (hours to 4 decimals, the rate to 3): compare with the unrounded truth
    assert result["video_hours_per_hour"] == pytest.approx(known_hours * 3600 / result["wall_s"], rel=0.05, abs=1e-3)


@pytest.mark.slow
def test_a_run_stopped_at_its_limit_still_reports_the_machine(tmp_path):
    import psutil

    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_pipeline.py"), "--tiny", "--work",
                           str(tmp_path), "--limit-s", "6"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["finished"] is False and 6 <= result["wall_s"] < 60
    assert result["cpu"]["util_mean_pct"] is not None and result["host_rss_peak_mb"] > 0 and "gpu" in result
    assert isinstance(result["live"], dict)  # what had reached the driver when it was stopped (maybe nothing)
    work = str(tmp_path)
    left = [p for p in psutil.process_iter(["cmdline"]) if any(work in part for part in p.info["cmdline"] or [])]
    assert not left  # the driver and everything it started are gone

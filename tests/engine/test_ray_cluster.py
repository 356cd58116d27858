"""Ray the way cluster users meet it: a worker dies mid-run, and a two-node cluster joined by address.

Both start real Ray processes and take a while, so they are marked slow (`pytest -m slow`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.engine.test_run import _assert_same_rows, _clips, _small_videos, _vde, _videos

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")


def _stage_workers() -> list[psutil.Process]:
    """Ray worker processes currently running one of our map_batches operators."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "ray::" in cmdline and ("MapBatches" in cmdline or "MapWorker" in cmdline):
            found.append(proc)
    return found


def test_killing_a_ray_worker_mid_run_loses_no_clip(tmp_path):
    videos = _small_videos(tmp_path / "in", 24)
    reference = tmp_path / "reference"
    assert _vde("run", "cpu", "--input", str(videos), "--output", str(reference), "--no-progress").wait() == 0
    out = tmp_path / "ray"
    proc = _vde("run", "cpu", "--input", str(videos), "--output", str(out), "--executor", "ray", "--no-progress")
    killed, first_seen = None, None
    deadline = time.time() + 120
    while time.time() < deadline and killed is None and proc.poll() is None:
        workers = _stage_workers()
        first_seen = first_seen or (time.time() if workers else None)
        if workers and time.time() - first_seen > 0.5:  # a worker that has started on its batches
            killed = workers[0]
            killed.send_signal(signal.SIGKILL)
        time.sleep(0.05)
    assert killed is not None, "no Ray worker was seen running a stage"
    assert proc.wait(timeout=300) == 0
    _assert_same_rows(_clips(out), _clips(reference))
    _assert_same_rows(_videos(out), _videos(reference))


@pytest.fixture()
def two_node_cluster(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    port = "6391"
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, env=env, capture_output=True, timeout=120)
    try:
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=2", "--disable-usage-stats"],
                       check=True, env=env, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_a_two_node_cluster_joined_by_address(tmp_path, two_node_cluster):
    import ray

    videos = _small_videos(tmp_path / "in", 8)
    reference = tmp_path / "reference"
    assert _vde("run", "cpu", "--input", str(videos), "--output", str(reference), "--no-progress").wait() == 0
    out = tmp_path / "cluster"
    assert _vde("run", "cpu", "--input", str(videos), "--output", str(out), "--ray-address", two_node_cluster,
                "--no-progress").wait() == 0
    _assert_same_rows(_clips(out), _clips(reference))
    ray.init(address=two_node_cluster)
    try:
        assert sum(node["Alive"] for node in ray.nodes()) == 2
    finally:
        ray.shutdown()

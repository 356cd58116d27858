"""``--metrics-port``: Prometheus scrapes per-stage counters while a real local run goes on; without the
package, one message."""

from __future__ import annotations

import socket
import sys
import threading
import time
import urllib.request

import pytest

from engine.executors.local import LocalExecutor
from engine.run import run_pipeline
from tests.engine.test_metrics import N_VIDEOS, Nap, _pipeline


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> dict[tuple[str, str], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("vde_stage_"):
            name_labels, value = line.rsplit(" ", 1)
            name, labels = name_labels.split("{")
            samples[(name, labels.split('"')[1])] = float(value)
    return samples


def test_counters_move_during_a_local_run(tmp_path):
    pytest.importorskip("prometheus_client")
    from engine.prometheus import serve

    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(N_VIDEOS):
        (folder / f"v{k:02d}.mp4").write_bytes(bytes([k]) * (100 + k))
    pipeline = _pipeline()
    pipeline.stages[0] = Nap(per_row_s=0.15, batch_size=2)  # 12 rows: about 1.8 s in nap alone
    executor, port = LocalExecutor(videos_per_part=4, progress=False), _free_port()
    stop = serve(port, executor.metrics, addr="127.0.0.1")
    try:
        run = threading.Thread(target=run_pipeline, args=(pipeline, str(folder), str(tmp_path / "out"), executor))
        begun = time.time()
        run.start()
        seen = []
        while run.is_alive():
            samples = _scrape(port)
            seen.append(samples.get(("vde_stage_rows_in_total", "nap"), 0.0))
            time.sleep(0.1)
        run.join()
        ended = time.time()
        final = _scrape(port)  # after the run the server still answers until stopped
    finally:
        stop()
    # nap's rows went up while the run was going on: some scrape saw part of them
    assert any(0 < n < N_VIDEOS for n in seen), seen
    assert seen == sorted(seen)
    assert final[("vde_stage_rows_in_total", "nap")] == N_VIDEOS
    assert final[("vde_stage_rows_out_total", "halve")] == 2 * N_VIDEOS
    assert final[("vde_stage_busy_seconds_total", "nap")] >= N_VIDEOS * 0.15
    assert final[("vde_stage_tokens_total", "talk")] == 2 * sum(100 + k for k in range(N_VIDEOS))
    assert final[("vde_stage_workers", "nap")] == 1 and ("vde_stage_queue_depth", "nap") in final
    # when each stage's calls ran: nap's span holds its sleeps, and talk (after halve) ended last
    first = {s: final[("vde_stage_first_call_start_seconds", s)] for s in ("nap", "halve", "talk")}
    last = {s: final[("vde_stage_last_call_end_seconds", s)] for s in ("nap", "halve", "talk")}
    assert begun <= first["nap"] <= first["halve"] <= first["talk"] <= ended
    assert last["nap"] - first["nap"] >= N_VIDEOS * 0.15 and last["talk"] == max(last.values()) <= ended
    with pytest.raises(OSError):  # stopped: nothing listens any more
        _scrape(port)


def test_without_the_package_one_message(tmp_path, capsys, monkeypatch):
    from engine.cli import main

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # what an install without vde[metrics] sees
    code = main(["run", "cpu", "--input", str(tmp_path), "--output", str(tmp_path / "out"), "--metrics-port", "9"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'vde[metrics]'" in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_a_port_in_use_is_one_message(tmp_path):
    pytest.importorskip("prometheus_client")
    from engine.errors import UserError
    from engine.metrics import RunMeter
    from engine.prometheus import serve

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(UserError, match="pick a free port"):
            serve(busy.getsockname()[1], RunMeter(), addr="127.0.0.1")

"""The output guard: one run per output (live, stale and remote locks), an up-front writability check with
one clear message, temporaries of a killed run removed, and user mistakes answered without a traceback."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli import main
from engine.lock import LOCK, OutputError, OutputLock, _process_start, check_output, clean_temporaries, guard_output
from engine.manifest import Manifest
from engine.synthetic import Scene, Transition, make_video

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lock_videos")
    for i in range(3):
        make_video(folder / f"v{i}.mp4", [Scene(frames=55, seed=i), Scene(frames=60, seed=i + 7)],
                   [Transition(kind="cut")], width=128, height=96)
    return folder


def _run(capsys, videos: Path, out: Path, *extra: str) -> tuple[int, str]:
    code = main(["run", "cpu", "--input", str(videos), "--output", str(out), "--no-progress", *extra])
    err = capsys.readouterr().err
    return code, err


def _one_clear_line(err: str, *parts: str) -> None:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if all(p in ln for p in parts)]
    assert len(lines) == 1, f"expected one line with {parts} in:\n{err}"


def _write_lock(out: Path, record: dict) -> None:
    (out / "_state").mkdir(parents=True, exist_ok=True)
    (out / LOCK).write_text(json.dumps(record))


def _record(pid: int, **kw) -> dict:
    return {"host": socket.gethostname(), "pid": pid, "pid_start": _process_start(pid), "started": "earlier",
            "heartbeat": time.time(), "token": "theirs", **kw}


def test_a_live_holder_keeps_the_output_and_is_named(tmp_path, videos, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen(["sleep", "60"])
    try:
        _write_lock(out, _record(holder.pid))
        code, err = _run(capsys, videos, out)
        assert code == 2
        _one_clear_line(err, "is in use by another run", f"pid {holder.pid} on {socket.gethostname()}")
        assert sorted(p.name for p in out.rglob("*")) == ["_state", "lock"]  # no work was done
        assert json.loads((out / LOCK).read_text())["token"] == "theirs"  # and the lock is still theirs
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_or_reused_pid_is_a_stale_lock_taken_over_with_a_warning(tmp_path, videos, capsys, caplog):
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "out"
    _write_lock(out, _record(dead.pid, pid_start="1"))
    code, err = _run(capsys, videos, out)
    assert code == 0 and "taking over the stale lock" in caplog.text + err
    assert not (out / LOCK).exists()  # released at the end
    assert Manifest(str(out)).read_json("run.json")["summary"]["videos"] == 3
    # our own pid, but recorded for a process that started at another time: a previous life of this pid
    _write_lock(out, _record(os.getpid(), pid_start="0"))
    with OutputLock(str(out)) as lock:
        assert json.loads((out / LOCK).read_text())["token"] == lock.token


def test_remote_locks_go_stale_by_heartbeat_only():
    out = "memory://vde-lock-test/out"
    lock = OutputLock(out, stale_after_s=60)
    lock.fs.pipe_file(lock.path, json.dumps(_record(1, host="another-host")).encode())
    with pytest.raises(OutputError, match="in use by another run .pid 1 on another-host"):
        lock.acquire()
    lock.fs.pipe_file(lock.path, json.dumps(_record(1, host="another-host", heartbeat=time.time() - 61)).encode())
    with lock:
        assert json.loads(lock.fs.cat(lock.path))["token"] == lock.token
    assert not lock.fs.exists(lock.path)


def test_the_heartbeat_refreshes_the_lock(tmp_path):
    lock = OutputLock(str(tmp_path), heartbeat_s=0.05)
    with lock:
        first = json.loads((tmp_path / LOCK).read_text())["heartbeat"]
        deadline = time.time() + 10
        while json.loads((tmp_path / LOCK).read_text())["heartbeat"] == first and time.time() < deadline:
            time.sleep(0.05)
        assert json.loads((tmp_path / LOCK).read_text())["heartbeat"] > first


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_concurrent_runs_one_waits_out_with_a_message(tmp_path, videos, capsys):
    out = tmp_path / "out"
    first = _cli("run", "cpu", "--input", str(videos), "--output", str(out), "--no-progress")
    deadline = time.time() + 120
    while not (out / LOCK).exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert (out / LOCK).exists(), "the first run never took the lock"
    # The second run from this process (already imported, so it reaches the lock while the first still works).
    code, err = _run(capsys, videos, out)
    assert first.poll() is None, "the first run ended before the second started: the test proves nothing"
    assert code == 2
    _one_clear_line(err, "is in use by another run", f"pid {first.pid}")
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert not (out / LOCK).exists()
    assert Manifest(str(out)).read_json("run.json")["summary"]["clips"] == 6


def test_a_file_where_a_folder_must_be_is_refused_before_any_work(tmp_path, videos, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "clips").write_text("I am a file")
    code, err = _run(capsys, videos, out)
    assert code == 2
    _one_clear_line(err, f"{out}/clips is a file where the run needs a folder")
    assert sorted(p.name for p in out.iterdir()) == ["clips"]
    plain = tmp_path / "plain_file"
    plain.write_text("x")
    code, err = _run(capsys, videos, plain)
    assert code == 2
    _one_clear_line(err, f"{plain} is a file, not a folder")


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    """A real tiny file system, where this machine lets us mount one (root); else the test is skipped."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_read_only_output_is_one_message_before_any_work(tmp_path, videos, capsys):
    with _tmpfs(tmp_path / "ro", "1m") as mount:
        (mount / "out").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        code, err = _run(capsys, videos, mount / "out")
        assert code == 2
        _one_clear_line(err, f"cannot write to {mount}/out: Read-only file system", "mount it writable")


def test_full_output_is_one_message_before_any_work(tmp_path, videos, capsys):
    with _tmpfs(tmp_path / "full", "64k") as mount:
        with contextlib.suppress(OSError), open(mount / "filler", "wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
        code, err = _run(capsys, videos, mount / "out")
        assert code == 2
        _one_clear_line(err, f"cannot write to {mount}/out: No space left on device", "free some space")


def test_a_disk_filling_mid_run_is_one_message(tmp_path, videos, capsys, monkeypatch):
    from engine import manifest

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "_state" / "parts"))

    monkeypatch.setattr(manifest, "write_atomic", full)
    code, err = _run(capsys, videos, tmp_path / "out")
    assert code == 2
    _one_clear_line(err, "No space left on device", "free some space")


def test_check_output_passes_a_fresh_and_a_used_output(tmp_path):
    check_output(str(tmp_path / "new"))
    (tmp_path / "used" / "clips").mkdir(parents=True)
    check_output(str(tmp_path / "used"))
    assert not [p for p in (tmp_path / "used").rglob(".tmp-*")]


def test_temporaries_of_a_killed_run_are_removed_and_never_read(tmp_path):
    out = tmp_path / "out"
    leftovers = [out / ".tmp-aa-run.json", out / "clips" / ".tmp-bb-x.mp4", out / "_state" / ".tmp-cc-lock",
                 out / "_state" / "parts" / ".tmp-dd-p.parquet", out / "manifest" / "clips" / ".tmp-ee.parquet"]
    kept = [out / "sample_videos" / ".tmp-user-file.mp4", out / "clips" / "real.mp4"]
    for path in leftovers + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"clip_id": ["a"]}), out / "manifest" / "clips" / "part-00000.parquet")
    assert Manifest(str(out)).read("clips").num_rows == 1  # the half-written .tmp- parquet is not data
    with guard_output(str(out)):
        assert [p for p in leftovers if p.exists()] == []
        assert all(p.exists() for p in kept)
    assert clean_temporaries(str(out)) == 0


def test_user_mistakes_are_one_line_without_traceback(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _run(capsys, empty, tmp_path / "o1")
    assert code == 2
    _one_clear_line(err, f"no videos found under {empty} (looked for .mp4, .mov, .mkv")
    code, err = _run(capsys, tmp_path / "nothing-*.mp4", tmp_path / "o2")
    assert code == 2
    _one_clear_line(err, "no files match")
    probe_only = tmp_path / "probe_only.yaml"
    probe_only.write_text("stages:\n  - stage: probe\n")
    code = main(["run", str(probe_only), "--input", str(empty), "--output", str(tmp_path / "o3")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "no splitting stage: add '- stage: split'" in err

"""End to end: the demo through the CLI, resume, bad inputs, fsspec inputs, both executors, SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.cli import main
from engine.executors.local import LocalExecutor
from engine.io import list_inputs
from engine.manifest import Manifest
from engine.pipeline import load_pipeline
from engine.run import run_pipeline
from engine.synthetic import Scene, Transition, make_video
from tests.conftest import SHARED_VIDEOS

REPO = Path(__file__).resolve().parents[2]
# The column that legitimately differs between an interrupted and an uninterrupted run: who wrote a clip
# file (a resumed run finds some written by the earlier one). Clip sizes compare exactly: same frames, same
# bytes (engine.clips).
VOLATILE = {"clip_written_by"}


def _clips(out: Path) -> list[dict]:
    """Clip rows, with the output root in clip_uri written as <out> so runs in two folders compare."""
    table = pq.read_table(out / "manifest" / "clips")
    rows = table.drop_columns([c for c in table.column_names if c in VOLATILE]).to_pylist()
    for row in rows:
        if row.get("clip_uri"):
            row["clip_uri"] = row["clip_uri"].replace(str(out), "<out>")
    return rows


def _videos(out: Path) -> list[dict]:
    return pq.read_table(out / "manifest" / "videos").to_pylist()


def _assert_same_rows(got: list[dict], want: list[dict]) -> None:
    key = lambda r: r.get("clip_id") or r.get("video_id")  # noqa: E731
    missing, extra = {key(r) for r in want} - {key(r) for r in got}, {key(r) for r in got} - {key(r) for r in want}
    assert not missing and not extra and len(got) == len(want), f"missing {missing}, extra {extra}"
    for a, b in zip(got, want):
        diff = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
        assert not diff, f"row {a.get('clip_id') or a.get('video_id')} differs: {diff}"


def test_demo_end_to_end(tmp_path, demo_videos):
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--no-progress"]) == 0
    assert (out / "report" / "index.html").is_file()  # the report registered under vde.reports ran
    _, truths = demo_videos
    clips = _clips(out)
    videos = {v["video_id"]: v for v in _videos(out)}
    assert len(videos) == len(truths) and all(v["status"] == "ok" for v in videos.values())
    by_name = {Path(v["uri"]).name: vid for vid, v in videos.items()}
    for name, truth in truths.items():
        spans = [(c["start_frame"], c["end_frame"]) for c in clips if c["video_id"] == by_name[name]]
        # every shot of >= 2 s gives one clip of its clean frames: cuts exact, transitions removed (a
        # dissolve's faint first and last mixes may take one clean frame more)
        expected = [(a, b + 1) for a, b in truth.shots if (b + 1 - a) / truth.fps >= 2.0]
        assert len(spans) == len(expected), name
        for (start, end), (a, b) in zip(spans, expected):
            assert a <= start <= a + 1 and b - 1 <= end <= b, (name, (start, end), (a, b))
    for clip in clips:
        assert clip["clip_id"] == f"{clip['video_id']}-{clip['start_frame']:07d}-{clip['end_frame']:07d}"
        path = out / "clips" / f"{clip['clip_id']}.mp4"
        with av.open(str(path)) as container:
            assert sum(1 for _ in container.decode(video=0)) == clip["clip_frames"]
        assert clip["end_s"] - clip["start_s"] == pytest.approx(clip["clip_frames"] / 25, abs=1e-6)
    assert main(["inspect", str(out)]) == 0

    # A rerun of the same command finds everything done: nothing is decoded or written again.
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}
    assert main(["demo", "--output", str(out), "--no-progress"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()} == mtimes
    assert _clips(out) == clips
    run = Manifest(str(out)).read_json("run.json")
    assert run["summary"]["skipped"] == len(truths) and len(run["history"]) == 1


def _bad_inputs(folder: Path, shared: Path | None) -> tuple[Path, dict[str, str]]:
    """Broken inputs and the cause each must be reported with."""
    folder.mkdir()
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("hello, not a video\n")
    good = folder / "good.mp4"
    make_video(good, [Scene(frames=60, seed=1), Scene(frames=60, seed=2)], [Transition(kind="cut")])
    (folder / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with av.open(str(folder / "audio_only.m4a"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    expected = {"zero.mp4": "empty file (0 bytes)", "text.mp4": "not a readable media file",
                "truncated.mp4": "not a readable media file", "audio_only.m4a": "no video stream",
                "missing.mp4": "FileNotFoundError", "gone.mp4": "FileNotFoundError"}
    lines = [str(p) for p in sorted(folder.iterdir())] + [str(folder / "missing.mp4"), "memory://nowhere/gone.mp4"]
    if shared is not None:
        for name in ("moviepy-test_video.mp4", "decord-corrupted.mp4", "no_duration.webm", "av1_video.mkv",
                     "h265_video.mp4", "h264_10bits.mp4", "transparent.webm", "decord-video_90.mov",
                     "goldeneye-vfr-drop3.mp4"):
            lines.append(str(shared / name))
        expected["moviepy-test_video.mp4"] = "frame size 1x1 is below the minimum side 16 px"
    listing = folder / "inputs.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing, expected


def test_bad_inputs_become_error_rows_and_the_run_finishes(tmp_path):
    shared = SHARED_VIDEOS
    listing, expected = _bad_inputs(tmp_path / "in", shared if shared.is_dir() else None)
    out = tmp_path / "out"
    assert main(["run", "cpu", "--input", str(listing), "--output", str(out), "--no-progress"]) == 0
    videos = {Path(v["uri"]).name: v for v in _videos(out)}
    assert len(videos) == len(listing.read_text().split())
    for name, cause in expected.items():
        row = videos[name]
        assert row["status"] == "error", name
        assert name in row["error"] and cause in row["error"], row["error"]
    ok = {n for n, v in videos.items() if v["status"] == "ok"}
    assert "good.mp4" in ok
    if shared.is_dir():
        # decodable edge cases are processed, not rejected
        assert {"decord-corrupted.mp4", "no_duration.webm", "av1_video.mkv", "h265_video.mp4", "h264_10bits.mp4",
                "transparent.webm", "decord-video_90.mov", "goldeneye-vfr-drop3.mp4"} <= ok
        assert "failed to decode" in videos["decord-corrupted.mp4"]["decode_warning"]
        assert videos["no_duration.webm"]["frames_decoded"] == 74
    summary = Manifest(str(out)).read_json("run.json")["summary"]
    assert summary["videos_error"] == len(expected) and sum(summary["errors_by_cause"].values()) == len(expected)


def test_nothing_to_do_exits_nonzero(tmp_path):
    (tmp_path / "bad.mp4").write_text("x")
    assert main(["run", "cpu", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--no-progress"]) == 1
    assert main(["run", "cpu", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o2")]) == 2
    assert main(["run", str(tmp_path / "bad.yaml"), "--input", str(tmp_path), "--output", str(tmp_path / "o3")]) == 2


def test_input_specs_and_fsspec_urls(tmp_path, demo_videos):
    folder, truths = demo_videos
    names = sorted(truths)
    assert [Path(u).name for u in list_inputs(str(folder))] == names
    assert [Path(u).name for u in list_inputs(str(folder / "*.mp4"))] == names
    assert list_inputs(f"file://{folder}") == [f"file://{folder}/{n}" for n in names]
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\n" + "\n".join(names) + "\n")
    shutil.copy(folder / names[0], tmp_path / names[0])
    assert list_inputs(str(listing))[0] == str(tmp_path / names[0])

    import fsspec

    memory = fsspec.filesystem("memory")
    for name in names:
        memory.pipe(f"/vde-test/in/{name}", (folder / name).read_bytes())
    found = list_inputs("memory://vde-test/in")
    assert [Path(u).name for u in found] == names and all(u.startswith("memory://") for u in found)
    pipeline = load_pipeline("cpu")
    summary = run_pipeline(pipeline, "memory://vde-test/in", "memory://vde-test/out", LocalExecutor(progress=False),
                           on_error="raise")
    assert summary.videos == 3 and summary.videos_error == 0 and summary.clips == 7
    clips = Manifest("memory://vde-test/out").read("clips")
    assert all(memory.exists(uri) for uri in clips.column("clip_uri").to_pylist())


def _small_videos(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        make_video(folder / f"v{i:02d}.mp4", [Scene(frames=55, seed=10 * i), Scene(frames=60, seed=10 * i + 1)],
                   [Transition(kind="cut")], width=160, height=96)
    return folder


def test_local_and_ray_executors_give_the_same_manifest(tmp_path):
    videos = _small_videos(tmp_path / "in", 4)
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    assert main(["run", "cpu", "--input", str(videos), "--output", str(local), "--no-progress"]) == 0
    assert main(["run", "cpu", "--input", str(videos), "--output", str(ray_out), "--executor", "ray",
                 "--no-progress"]) == 0
    _assert_same_rows(_clips(ray_out), _clips(local))
    assert len(_clips(local)) == 8
    _assert_same_rows(_videos(ray_out), _videos(local))


def _vde(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_result(tmp_path):
    videos = _small_videos(tmp_path / "in", 10)
    reference = tmp_path / "reference"
    assert _vde("run", "cpu", "--input", str(videos), "--output", str(reference), "--no-progress").wait() == 0
    for delay_parts in (1, 2):
        out = tmp_path / f"killed{delay_parts}"
        proc = _vde("run", "cpu", "--input", str(videos), "--output", str(out), "--no-progress")
        parts = out / "_state" / "results"
        deadline = time.time() + 60
        while time.time() < deadline and len(list(parts.glob("write_clips-*/*.parquet"))) < delay_parts:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / "run.json").exists(), "the run finished before it could be killed"
        assert _vde("run", "cpu", "--input", str(videos), "--output", str(out), "--no-progress").wait() == 0
        _assert_same_rows(_clips(out), _clips(reference))
        _assert_same_rows(_videos(out), _videos(reference))
        clip_files = sorted(p.name for p in (out / "clips").iterdir())
        assert clip_files == sorted(p.name for p in (reference / "clips").iterdir())  # no temporary leftovers

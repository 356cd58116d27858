"""A folder of hostile inputs through ``vde run`` in a subprocess (so a hang fails the test instead of
stalling it): a FIFO, a byte-identical copy, an animated GIF and a moov-first MP4 cut in half next to a good
video. Every input gets a row saying what happened; only whole, distinct videos give clips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pyarrow.parquet as pq

from engine.synthetic import Scene, Transition, make_video

REPO = Path(__file__).resolve().parents[2]


def _faststart_cut(src: Path, dst: Path, fraction: float) -> None:
    whole = dst.with_suffix(".whole")
    with av.open(str(src)) as inp, av.open(str(whole), "w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = whole.read_bytes()
    whole.unlink()
    dst.write_bytes(data[: int(len(data) * fraction)])


def test_hostile_folder_gives_a_row_per_input_and_no_hang(tmp_path):
    from PIL import Image

    inputs = tmp_path / "in"
    inputs.mkdir()
    good = inputs / "a_original.mp4"
    truth = make_video(good, [Scene(frames=60, seed=1), Scene(frames=60, seed=2)], [Transition(kind="cut")],
                       width=128, height=96)
    shutil.copy(good, inputs / "b_copy.mp4")
    os.mkfifo(inputs / "c_pipe.mp4")
    scene = tmp_path / "scene.mp4"  # one textured 3 s shot with a moving square, then as a GIF
    make_video(scene, [Scene(frames=30, seed=5)], [], width=96, height=64, fps=10)
    with av.open(str(scene)) as container:
        frames = [Image.fromarray(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    frames[0].save(inputs / "d_anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    _faststart_cut(good, inputs / "e_cut.mp4", 0.5)

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "engine.cli", "run", "cpu", "--input", str(inputs), "--output",
                           str(out), "--no-progress"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    videos = {Path(v["uri"]).name: v for v in pq.read_table(out / "manifest" / "videos").to_pylist()}
    assert sorted(videos) == ["a_original.mp4", "b_copy.mp4", "c_pipe.mp4", "d_anim.gif", "e_cut.mp4"]
    assert videos["a_original.mp4"]["status"] == "ok" and videos["d_anim.gif"]["status"] == "ok"
    assert videos["b_copy.mp4"]["error"] == (f"ingest: {inputs / 'b_copy.mp4'}: duplicate: same content as "
                                             f"{inputs / 'a_original.mp4'}")
    assert videos["c_pipe.mp4"]["error"] == f"ingest: {inputs / 'c_pipe.mp4'}: not a regular file (a FIFO)"
    cut = videos["e_cut.mp4"]["error"]
    assert cut.startswith(f"probe: {inputs / 'e_cut.mp4'}: truncated: index has {truth.frames} frames, ")
    clips = pq.read_table(out / "manifest" / "clips").to_pylist()
    by_video = {}
    for clip in clips:
        by_video.setdefault(clip["video_id"], []).append((clip["start_frame"], clip["end_frame"]))
    assert by_video[videos["a_original.mp4"]["video_id"]] == [(0, 60), (60, 120)]
    assert by_video[videos["d_anim.gif"]["video_id"]] == [(0, 30)]  # its one 3 s shot
    assert set(by_video) == {videos["a_original.mp4"]["video_id"], videos["d_anim.gif"]["video_id"]}
    gif_clip = out / "clips" / f"{videos['d_anim.gif']['video_id']}-0000000-0000030.mp4"
    with av.open(str(gif_clip)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30

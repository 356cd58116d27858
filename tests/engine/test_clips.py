"""Clip files: every clip is written with exactly its frames (worst-case sources, the shared AVI and VFR
files), the same bytes every time, and a clip that cannot be written is an error row the run counts."""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import pytest

import engine.clips as clips_module
from engine.video import PyAVReader
from tests.engine import worst_cases


def _decode(data: bytes) -> tuple[list[np.ndarray], list[float]]:
    with av.open(io.BytesIO(data)) as container:
        frames = [(f.to_ndarray(format="rgb24"), float(f.time)) for f in container.decode(video=0)]
    return [f for f, _ in frames], [t for _, t in frames]


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("clip_cases")
    names = ("mpeg4_avi", "vp8_nocues", "open_gop", "vfr")
    return {name: str(worst_cases.CASES[name](folder)) for name in names}


@pytest.mark.parametrize("name", ["mpeg4_avi", "vp8_nocues", "open_gop", "vfr"])
def test_clips_hold_exactly_their_frames(cases, name):
    for start, end in ((0, 20), (17, 50), (41, 70)):
        data, how = clips_module.cut_clip(cases[name], start, end)
        frames, _ = _decode(data)
        assert [worst_cases.frame_number(f) for f in frames] == list(range(start, end)), (name, start, how)
    expected = "encode-cfr" if name == "mpeg4_avi" else "encode"  # AVI timestamps cannot name frames
    assert how == expected


def test_vfr_clips_keep_their_timing(cases):
    reader = PyAVReader(cases["vfr"])
    base = float(reader.stream.time_base)
    source = [(p - reader.pts[13]) * base for p in reader.pts[13:61]]
    reader.close()
    _, times = _decode(clips_module.cut_clip(cases["vfr"], 13, 61)[0])
    assert np.allclose(np.array(times) - times[0], source, atol=1e-3)


def _aligned_with_source(path: str, start: int, data: bytes) -> None:
    """The clip's frames are the source's ``start..``: closest at offset 0, not one frame early or late."""
    frames, _ = _decode(data)
    reader = PyAVReader(path)
    source = reader.get_frames(list(range(start - 1, start + len(frames) + 1)))
    reader.close()
    error = {shift: np.mean([np.abs(f.astype(int) - source[k + 1 + shift]).mean() for k, f in enumerate(frames)])
             for shift in (-1, 0, 1)}
    assert error[0] < 2 and error[0] < min(error[-1], error[1]), error


@pytest.mark.parametrize("name,spans", [
    ("mmaction2-test.avi", [(0, 50), (37, 101), (101, 164)]),
    ("goldeneye-vfr-drop3.mp4", [(0, 40), (40, 100), (100, 160)]),
])
def test_shared_files_write_every_clip(shared_videos, name, spans):
    path = str(shared_videos / name)
    for start, end in spans:
        data, _ = clips_module.cut_clip(path, start, end)
        frames, _ = _decode(data)
        assert len(frames) == end - start
    _aligned_with_source(path, spans[1][0], clips_module.cut_clip(path, *spans[1])[0])


def test_same_clip_same_bytes_when_encoded_side_by_side(demo_videos):
    folder, _ = demo_videos
    path = str(sorted(folder.glob("*.mp4"))[0])
    with ThreadPoolExecutor(4) as pool:
        digests = set(pool.map(lambda _: hashlib.sha256(clips_module.cut_clip(path, 10, 70)[0]).hexdigest(), range(12)))
    assert len(digests) == 1


def test_clip_errors_are_rows_the_run_counts(tmp_path, demo_videos):
    """A clip that cannot be written (stream copy of a B-frame stream) is an error row, counted by cause in
    the run summary and listed by ``vde inspect``."""
    from engine.cli import main
    from engine.executors.local import LocalExecutor
    from engine.manifest import Manifest
    from engine.pipeline import load_pipeline
    from engine.run import run_pipeline

    folder, _ = demo_videos
    spec = tmp_path / "copy.yaml"
    spec.write_text("name: copy\nstages:\n  - stage: probe\n  - stage: split\n    min_clip_s: 2.0\n"
                    "  - stage: write_clips\n    mode: copy\n")
    out = tmp_path / "out"
    summary = run_pipeline(load_pipeline(str(spec)), str(folder), str(out), LocalExecutor(progress=False))
    clips = Manifest(str(out)).read("clips").to_pylist()
    assert clips and all(c["status"] == "error" and "clip file not written" in c["error"] for c in clips)
    assert summary.videos_error == 0 and summary.clips_error == len(clips)
    assert summary.errors_by_cause == {"write_clips: clip file not written": len(clips)}
    assert main(["inspect", str(out)]) == 0

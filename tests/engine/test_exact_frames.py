"""Random access equals a full sequential decode, frame for frame, on every shared video and on synthetic
worst cases (tests/engine/worst_cases.py): random single indices, each on a fresh reader as a stage asks
for them, and random index sets (unsorted, with repeats) on one reader."""

from __future__ import annotations

import hashlib

import av
import numpy as np
import pytest

from engine.video import PyAVReader, configure_decoder, iter_frames
from tests.engine import worst_cases

# Larger files: a full decode of each takes seconds on a loaded 2-core machine.
SLOW = {"bikes.mp4", "carphone_pristine.mp4", "cityCC0.mpg", "fades.mp4", "flipping_a_pancake.mkv",
        "smpte-2997.mp4", "traffic_camera.mp4", "goldeneye-vfr-drop3.mp4", "counter.mp4", "no_duration.webm"}
SHARED = ["av1_video.mkv", "bikes.mp4", "carphone_distorted.mp4", "carphone_pristine.mp4", "cityCC0.mpg",
          "counter.mp4", "decord-corrupted.mp4", "decord-unordered.mov", "decord-video_0.mov",
          "decord-video_90.mov", "delayed_start.mp4", "fades.mp4", "flipping_a_pancake.mkv",
          "goldeneye-vfr-drop3.mp4", "h264_10bits.mp4", "h265_video.mp4", "mmaction2-test.avi",
          "moviepy-test_video.mp4", "no_duration.webm", "smpte-2997.mp4", "traffic_camera.mp4", "transparent.webm"]


def sequential(path: str) -> tuple[list[str], list[np.ndarray], int]:
    """Digests of every frame of a full decode (the definition of frame N), the frames of a small video,
    and the number of packets that failed to decode."""
    digests, frames, skipped = [], [], [0]
    with av.open(path) as container:
        stream = container.streams.video[0]
        configure_decoder(stream)
        for frame in iter_frames(container, stream, skipped):
            rgb = frame.to_ndarray(format="rgb24")
            digests.append(hashlib.sha1(rgb.tobytes()).hexdigest())
            if rgb.shape[:2] == (worst_cases.HEIGHT, worst_cases.WIDTH):
                frames.append(rgb)
        del stream
    return digests, frames, skipped[0]


def assert_exact(path: str, truth: list[str], decoded_frames: int | None = None, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n = len(truth)

    def digest(rgb: np.ndarray) -> str:
        return hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest()

    wrong = []
    for target in sorted({int(t) for t in rng.integers(0, n, 8)} | {0, n - 1}):
        reader = PyAVReader(path, decoded_frames)
        if reader.rotation == 0:  # compare unrotated pixels: the truth is the decoder's own picture
            got = reader.get_frames([target])[0]
            if reader.rotation:
                got = np.rot90(got, k=reader.rotation // 90)
            if digest(got) != truth[target]:
                wrong.append(("single", target))
        reader.close()
    reader = PyAVReader(path, decoded_frames)
    for size in (2, 5, 9):
        picks = [int(t) for t in rng.integers(0, n, size)] + [int(rng.integers(0, n))] * 2  # with repeats
        frames = reader.get_frames(picks)
        if reader.rotation:
            frames = np.rot90(frames, k=reader.rotation // 90, axes=(1, 2))
        wrong += [("set", i) for i, rgb in zip(picks, frames) if digest(rgb) != truth[i]]
    reader.close()
    assert not wrong, f"{path}: frames that differ from the sequential decode: {wrong}"


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("worst_cases")
    return {name: str(make(folder)) for name, make in worst_cases.CASES.items()}


@pytest.mark.parametrize("name", sorted(worst_cases.CASES))
def test_worst_cases_are_frame_exact(cases, name):
    path = cases[name]
    truth, frames, skipped = sequential(path)
    numbers = [worst_cases.frame_number(f) for f in frames]
    if name == "damaged":
        assert skipped == 2 and len(truth) == 78  # the damage is real: two frames do not decode
    else:  # the sequential decode itself shows every source frame, in order
        assert numbers == list(range(len(numbers)))
    with av.open(path) as container:
        packets = sum(1 for p in container.demux(video=0) if p.size)
    # the splitter's count of a full decode, as the frame service passes it
    assert_exact(path, truth, decoded_frames=len(truth) if len(truth) != packets else None)


def test_damage_found_while_decoding_switches_to_counting(cases):
    """Without the splitter's count, a decode that crosses a lost frame notices and counts from then on."""
    path = cases["damaged"]
    truth, _, _ = sequential(path)
    reader = PyAVReader(path)
    assert reader.by_timestamp and reader.num_frames == 80
    frames = reader.get_frames(list(range(28, 40)))  # crosses the first damaged packet
    assert not reader.by_timestamp
    assert [hashlib.sha1(f.tobytes()).hexdigest() for f in frames] == truth[28:40]
    tail = reader.get_frames([79])  # past the 78 decodable frames: the last decodable one
    assert reader.substituted == [79] and hashlib.sha1(tail[0].tobytes()).hexdigest() == truth[-1]
    reader.close()


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in SHARED])
def test_shared_videos_are_frame_exact(shared_videos, name):
    path = str(shared_videos / name)
    truth, _, skipped = sequential(path)
    reader = PyAVReader(path)
    packets = reader.num_frames
    reader.close()
    assert_exact(path, truth, decoded_frames=len(truth) if skipped or len(truth) != packets else None)


class _LateSeeks:
    """A container whose seeks land on the keyframe after the one asked for (what the Matroska demuxer did on
    a VP8 file without cues)."""

    def __init__(self, container, reader: PyAVReader):
        self._container, self._reader = container, reader

    def seek(self, offset, **kw):
        later = [k for k in self._reader.keyframes if k > offset]
        return self._container.seek(later[0] if later else offset, **kw)

    def __getattr__(self, name):
        return getattr(self._container, name)


def test_a_seek_that_lands_late_is_caught(cases, monkeypatch):
    """The reader sees it landed past the target and steps back, still naming frames by timestamp."""
    path = cases["open_gop"]
    truth, _, _ = sequential(path)
    real_open = PyAVReader._open

    def late_open(self):
        real_open(self)
        self.container = _LateSeeks(self.container, self)

    monkeypatch.setattr(PyAVReader, "_open", late_open)
    for target in (5, 13, 30, 47, 89):
        reader = PyAVReader(path)
        got = reader.get_frames([target])[0]
        assert reader.by_timestamp  # caught by the landing check, not by giving up on timestamps
        reader.close()
        assert hashlib.sha1(got.tobytes()).hexdigest() == truth[target], target

"""Probe and frame readers against the shared videos' ffprobe facts and a full sequential decode."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from engine.video import DecordReader, PyAVReader, VideoError, clip_frame_indices, open_video, probe_video

PROBED = ["av1_video.mkv", "bikes.mp4", "cityCC0.mpg", "goldeneye-vfr-drop3.mp4", "h264_10bits.mp4",
          "h265_video.mp4", "no_duration.webm", "transparent.webm", "traffic_camera.mp4", "decord-video_90.mov"]


@pytest.mark.parametrize("name", PROBED)
def test_probe_matches_ffprobe(shared_videos, ground_truth, name):
    info = probe_video(str(shared_videos / name))
    tech = ground_truth[name]["technical"]
    assert (info.width, info.height) == (tech["width"], tech["height"])
    assert info.frames == tech["frames_decoded"]
    assert info.video_streams == tech["video_streams"]
    fps = float(Fraction(tech["avg_frame_rate"]))  # "num/den" from ffprobe
    assert info.duration_s == pytest.approx(tech["frames_decoded"] / fps, rel=0.02)


def test_probe_edge_cases(shared_videos):
    rotated = probe_video(str(shared_videos / "decord-video_90.mov"))
    assert rotated.rotation == 90 and (rotated.display_width, rotated.display_height) == (320, 568)
    vfr = probe_video(str(shared_videos / "goldeneye-vfr-drop3.mp4"))
    assert vfr.vfr and vfr.fps == pytest.approx(16.05, abs=0.05) and vfr.nominal_fps == pytest.approx(16.05, abs=0.05)
    assert not probe_video(str(shared_videos / "bikes.mp4")).vfr
    assert probe_video(str(shared_videos / "transparent.webm")).has_alpha
    assert probe_video(str(shared_videos / "h264_10bits.mp4")).pix_fmt == "yuv420p10le"
    delayed = probe_video(str(shared_videos / "delayed_start.mp4"))
    assert delayed.container_start_s == pytest.approx(1.075, abs=0.01)


def test_probe_rejects_non_videos(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video")
    for name in ("empty.mp4", "text.mp4"):
        with pytest.raises(VideoError, match="not a readable media file"):
            probe_video(str(tmp_path / name))


def _all_frames(path: str) -> np.ndarray:
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.mark.parametrize("reader_cls", [DecordReader, PyAVReader])
def test_random_access_is_frame_exact(shared_videos, reader_cls):
    path = str(shared_videos / "bikes.mp4")
    every = _all_frames(path)
    reader = reader_cls(path)
    indices = [249, 3, 137, 138, 30, 0, 200, 75]
    frames = reader.get_frames(indices)
    reader.close()
    assert reader.num_frames == len(every)
    for got, i in zip(frames, indices):
        # decord uses FFmpeg 4.1's colour conversion, PyAV FFmpeg 8's: allow rounding, not a wrong frame
        assert np.abs(got.astype(int) - every[i]).mean() < 1.5, f"frame {i} differs"
        others = [j for j in (i - 1, i + 1) if 0 <= j < len(every)]
        assert all(np.abs(got.astype(int) - every[j]).mean() > np.abs(got.astype(int) - every[i]).mean() for j in others)


def test_av1_goes_to_pyav_and_rotation_is_applied(shared_videos):
    with pytest.raises(VideoError, match="decord cannot open it"):
        DecordReader(str(shared_videos / "av1_video.mkv"))  # decord's FFmpeg 4.1 has no AV1 decoder
    reader = open_video(str(shared_videos / "av1_video.mkv"), codec="libdav1d")
    assert reader.backend == "pyav"
    assert reader.get_frames([10]).shape == (1, 360, 640, 3)
    path = str(shared_videos / "decord-video_90.mov")
    by_decord, by_pyav = open_video(path, backend="decord"), open_video(path, backend="pyav")
    for reader in (by_decord, by_pyav):
        assert reader.get_frames([0, 2]).shape == (2, 568, 320, 3)
        assert reader.get_frames([1], size=(64, 112)).shape == (1, 112, 64, 3)
    # both backends turn the picture the same way (decord's FFmpeg rotates by itself; PyAV's frames are turned here)
    assert np.abs(by_decord.get_frames([1]).astype(int) - by_pyav.get_frames([1])).mean() < 3


def test_clip_frame_indices():
    assert clip_frame_indices(10, 20, 3) == [10, 14, 19]  # round half to even: 4.5 -> 4
    assert clip_frame_indices(0, 5, 8) == [0, 1, 2, 3, 4]
    assert clip_frame_indices(4, 10, 1) == [7]
    assert clip_frame_indices(3, 3, 4) == []

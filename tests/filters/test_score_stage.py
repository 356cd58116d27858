"""The fused ``score`` stage on synthetic clips of known motion, text and blur, on the shared real
videos, and on edge cases (1-frame, all-black, tiny, rotated, damaged)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from engine.video import clip_frame_indices, open_video
from filters import scorer
from filters.scorers import motion
from filters.score import Score
from tests.filters.conftest import PAN_SPEEDS, clip_rows, write_frames


def _score(rows: list[dict], **kwargs) -> list[dict]:
    return Score(**kwargs).process_batch(pa.Table.from_pylist(rows)).to_pylist()


def test_motion_follows_known_pan_speed(pans) -> None:
    path, truth = pans
    rows = clip_rows(path, [(a, b + 1) for a, b in truth.shots])
    out = _score(rows, ocr=False)
    motion = [r["motion_score"] for r in out]
    camera = [r["camera_motion"] for r in out]
    assert motion == sorted(motion)  # faster pan, higher score
    assert motion[0] < 0.05 and camera[0] < 0.05  # the static shot scores near 0
    for speed, m, c in zip(PAN_SPEEDS[1:], motion[1:], camera[1:]):
        assert c == pytest.approx(speed, rel=0.12)  # the camera proxy is the pan speed
        assert m == pytest.approx(speed, rel=0.2)  # the still square and frame edges pull the mean down
    assert out[-1]["moving_frac"] > 0.8 and out[0]["moving_frac"] < 0.05
    assert all(r["score_notes"] == "ocr off" and 17 <= r["score_frames"] <= 20 for r in out)  # NaN text: says why
    # The background slides left: the camera pans right, at the pan speed; the square stands still.
    assert [r["camera_move"] for r in out] == ["static"] + ["pan_right"] * 4
    for speed, row in zip(PAN_SPEEDS, out):
        assert row["camera_speed"] == pytest.approx(speed, rel=0.05, abs=0.05)
        assert row["object_motion"] < 0.15


def test_text_area_and_clarity_match_the_rendered_truth(text_and_blur) -> None:
    path, truth = text_and_blur
    rows = clip_rows(path, [(a, b + 1) for a, b in truth.shots])
    plain, text, blurred = _score(rows, ocr_frames=2, pairs=2, ocr_verify=True)
    x, y, w, h = truth.text_boxes[1]
    expected = w * h / (truth.width * truth.height)
    assert text["text_area_max"] == pytest.approx(expected, rel=0.4)
    assert text["text_boxes"] >= 1
    assert plain["text_area_max"] < 0.2 * expected  # the same scene without the caption
    assert blurred["clarity"] < 0.5 * plain["clarity"]
    assert plain["orientation"] == "landscape" and plain["aspect_ratio"] == pytest.approx(16 / 9)
    assert (plain["crop_x"], plain["crop_y"], plain["crop_w"], plain["crop_h"]) == (0, 0, 640, 360)


def test_motion_scale_matches_the_reference_farneback(shared_videos, ground_truth) -> None:
    """Same flow and scale as ground_truth.json's reference_motion (a baseline, not truth)."""
    for name in ("bikes.mp4", "traffic_camera.mp4", "carphone_pristine.mp4", "counter.mp4"):
        rows = clip_rows(shared_videos / name, [(0, ground_truth[name]["technical"]["frames_decoded"])])
        (out,) = _score(rows, ocr=False, pairs=16)
        ref = ground_truth[name]["reference_motion"]
        assert out["motion_score"] == pytest.approx(ref["mean_flow"], rel=0.25, abs=0.03), name
        assert out["camera_motion"] == pytest.approx(ref["global_motion"], rel=0.35, abs=0.03), name
        assert out["moving_frac"] == pytest.approx(ref["moving_frac"], rel=0.3, abs=0.02), name


def test_traffic_camera_motion_events_beat_static_spans(shared_videos, ground_truth) -> None:
    """In the DVR-Scan region of interest, spans with motion events move; the spans between do not."""
    truth = ground_truth["traffic_camera.mp4"]["ground_truth"]["motion_events_in_roi"]
    assert "(9,149), (358,491), (542,576)" in truth
    reader = open_video(str(shared_videos / "traffic_camera.mp4"))
    try:
        def roi_motion(start: int, end: int) -> float:
            anchors = clip_frame_indices(start, end - 1, 8)
            indices = sorted({i for a in anchors for i in (a, a + 1)})
            grey = scorer.to_grey(reader.get_frames(indices)[:, 532:659, 631:841])
            at = {f: k for k, f in enumerate(indices)}
            return motion.motion_stats([scorer.dense_flow(grey[at[a]], grey[at[a + 1]]) for a in anchors]).mean
        events = [roi_motion(9, 149), roi_motion(358, 491), roi_motion(542, 576)]
        static = [roi_motion(160, 350), roi_motion(495, 540)]
    finally:
        reader.close()
    assert min(events) > 5 * max(static)
    assert max(static) < 0.05


def test_shared_videos_rank_as_labelled(shared_videos) -> None:
    names = ["carphone_pristine.mp4", "carphone_distorted.mp4", "counter.mp4", "smpte-2997.mp4", "fades.mp4",
             "traffic_camera.mp4"]
    rows = [r for n in names for r in clip_rows(shared_videos / n, [(0, 30)], video_id=n)]
    out = {r["video_id"]: r for r in _score(rows, ocr_frames=2, pairs=4)}
    assert out["carphone_pristine.mp4"]["clarity"] > 1.5 * out["carphone_distorted.mp4"]["clarity"]
    for text in ("counter.mp4", "smpte-2997.mp4"):
        for plain in ("fades.mp4", "carphone_pristine.mp4", "traffic_camera.mp4"):
            assert out[text]["text_area_max"] > 0.02 > out[plain]["text_area_max"], (text, plain)
    assert out["fades.mp4"]["motion_score"] < 0.01
    # smpte-2997 is 4:3 colour bars pillarboxed in 1920x1080: 240 px bars left and right
    smpte = out["smpte-2997.mp4"]
    assert smpte["crop_x"] == pytest.approx(240, abs=6) and smpte["crop_w"] == pytest.approx(1440, abs=12)
    assert smpte["border_frac"] == pytest.approx(0.25, abs=0.01)


def test_rotated_and_tiny_videos(shared_videos) -> None:
    rotated, tiny = (clip_rows(shared_videos / n, [(0, 3)], video_id=n)[0]
                     for n in ("decord-video_90.mov", "moviepy-test_video.mp4"))
    out = {r["video_id"]: r for r in _score([rotated, tiny])}
    r90 = out["decord-video_90.mov"]
    assert (r90["orientation"], r90["crop_w"], r90["crop_h"]) == ("portrait", 320, 568)
    assert r90["status"] == "ok" and math.isfinite(r90["motion_score"])
    one = out["moviepy-test_video.mp4"]  # 1x1 pixels
    assert one["status"] == "ok" and one["orientation"] == "square"
    assert all(math.isnan(one[k]) for k in ("motion_score", "clarity", "text_area_max", "border_frac"))
    assert "below min_side" in one["score_notes"]


def test_one_frame_and_all_black_clips(tmp_path, pans) -> None:
    path, truth = pans
    black = write_frames(tmp_path / "black.mp4", [np.zeros((64, 96, 3), np.uint8)] * 12)
    rows = clip_rows(path, [(5, 6)]) + clip_rows(black, [(0, 12)], video_id="black")
    one, dark = _score(rows, ocr_frames=2)
    assert one["status"] == "ok" and one["score_frames"] == 1
    assert math.isnan(one["motion_score"]) and "motion needs a pair" in one["score_notes"]
    assert one["clarity"] > 0 and one["text_boxes"] is not None
    assert dark["status"] == "ok" and dark["motion_score"] == 0.0 and dark["clarity"] == 0.0
    assert dark["text_area_max"] == 0.0 and dark["crop_w"] is None and math.isnan(dark["border_frac"])
    assert "all sampled frames are black" in dark["score_notes"]


def test_damaged_stream_skips_frames_and_bad_files_become_error_rows(shared_videos, tmp_path) -> None:
    rows = clip_rows(shared_videos / "decord-corrupted.mp4", [(20, 45)], video_id="corrupt")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    rows.append({**rows[0], "uri": str(junk), "video_id": "junk", "clip_id": "junk-0"})
    # Frame 30 does not decode: PyAV's reader skips the damaged packet and gives the next decodable frame
    damaged, bad = _score(rows, ocr=False, pairs=8, backend="pyav")  # anchors include frame 30
    assert damaged["status"] == "ok" and math.isfinite(damaged["motion_score"])
    assert damaged["score_frames"] >= 14
    assert bad["status"] == "error" and "junk.mp4" in bad["error"] and "score" in bad["error"]


def test_check_reports_bad_values() -> None:
    problems = Score(pairs=0, ocr_frames=0, border_threshold=300).check()
    assert len(problems) == 3 and any("pairs" in p for p in problems)


def test_camera_class_of_static_shared_videos(shared_videos, ground_truth) -> None:
    """ground_truth.json: traffic_camera and mmaction2 are static cameras (cars pass; a person fills half
    the frame); the shot of bikes.mp4 from frame 42 pans over the traffic."""
    assert "static" in ground_truth["traffic_camera.mp4"]["ground_truth"]["camera"]
    assert ground_truth["mmaction2-test.avi"]["ground_truth"]["camera"] == "static"
    rows = [r for n in ("traffic_camera.mp4", "mmaction2-test.avi") for r in clip_rows(shared_videos / n, [(0, 160)],
                                                                                      video_id=n)]
    rows += clip_rows(shared_videos / "bikes.mp4", [(42, 76)], video_id="bikes pan")
    out = {r["video_id"]: r for r in _score(rows, ocr=False)}
    for name in ("traffic_camera.mp4", "mmaction2-test.avi"):
        assert out[name]["camera_move"] == "static", (name, out[name]["camera_speed"])
        assert out[name]["object_motion"] > 0.1  # the scene moves; the camera does not
    assert out["bikes pan"]["camera_move"] != "static" and out["bikes pan"]["camera_speed"] > 0.5


@pytest.mark.slow
def test_shared_videos_against_their_ground_truth(shared_videos, ground_truth) -> None:
    """Every shared video as one clip at the default settings: motion ranks as the all-pairs reference
    does, no full-frame video gets a crop box, no video without text gets a text area, the pillarboxed
    test card is cropped."""
    rows = []
    for name, entry in ground_truth.items():
        frames = entry.get("technical", {}).get("frames_decoded") or 0
        if frames >= 2 and "reference_motion" in entry:
            rows += clip_rows(shared_videos / name, [(0, frames)], video_id=name)
    out = {r["video_id"]: r for r in _score(rows)}
    measured = [(r["motion_score"], ground_truth[n]["reference_motion"]["mean_flow"]) for n, r in out.items()
                if math.isfinite(r["motion_score"])]
    ranks = [np.argsort(np.argsort(np.array(col), kind="stable")) for col in zip(*measured)]
    assert np.corrcoef(*ranks)[0, 1] >= 0.95
    for name, row in out.items():
        if name != "smpte-2997.mp4" and math.isfinite(row["border_frac"]):
            assert row["border_frac"] <= 0.02, name
        if ground_truth[name].get("ground_truth", {}).get("text") == "none":
            assert row["text_area_max"] <= 0.02, name
    assert out["smpte-2997.mp4"]["border_frac"] == pytest.approx(0.25, abs=0.01)

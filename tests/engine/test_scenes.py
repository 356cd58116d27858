"""Scene splitting with PySceneDetect's detectors against ground truth: synthetic videos with known cuts,
fades and dissolves, and the shared real videos with hand-checked cuts (TransNetV2: test_shots.py)."""

from __future__ import annotations

import pytest

from engine.synthetic import Scene, Transition, make_video
from engine.scenes import DetectorConfig, detect_transitions, plan_clips

ADAPTIVE = DetectorConfig(detector="adaptive")


def _assert_clips_respect(truth, spans):
    """No clip spans a true cut or contains a frame of a true gradual transition."""
    for span in spans:
        frames = set(range(span.start, span.end))
        for cut in truth.cuts:
            assert not (span.start < cut < span.end), f"clip {span} spans the cut at {cut}"
        for first, last in truth.gradual:
            assert not frames & set(range(first, last + 1)), f"clip {span} contains transition frames {first}-{last}"


@pytest.fixture(scope="module")
def mixed_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("scenes") / "mixed.mp4"
    scenes = [Scene(frames=70, seed=11, speed=1.0), Scene(frames=80, seed=12, speed=4.0),
              Scene(frames=110, seed=13, object_speed=0.0), Scene(frames=75, seed=14, speed=2.0)]
    transitions = [Transition(kind="cut"), Transition(kind="fade", frames=20), Transition(kind="dissolve", frames=16)]
    return path, make_video(path, scenes, transitions)


def test_synthetic_cuts_and_gradual_transitions_are_found(mixed_video):
    path, truth = mixed_video
    found = detect_transitions(str(path), ADAPTIVE)
    assert found.frames == truth.frames
    assert found.cuts == truth.cuts
    assert len(found.gradual) == len(truth.gradual)
    for (f0, f1), (t0, t1) in zip(found.gradual, truth.gradual):
        overlap = len(set(range(f0, f1 + 1)) & set(range(t0, t1 + 1)))
        assert overlap / (t1 - t0 + 1) >= 0.8, f"found {f0}-{f1} for true {t0}-{t1}"
    spans = plan_clips(found, min_clip_s=2.0, max_clip_s=10.0, min_clip_frames=16)
    _assert_clips_respect(truth, spans)
    assert len(spans) == 4  # one clip per scene: every scene is >= 2 s after its transitions are removed


def test_gradual_detection_can_be_switched_off(mixed_video):
    path, truth = mixed_video
    found = detect_transitions(str(path), DetectorConfig(detector="adaptive", gradual=False))
    assert found.gradual == []
    assert found.cuts == truth.cuts


def test_long_scene_is_chunked_and_short_ones_dropped(tmp_path):
    path = tmp_path / "long.mp4"
    truth = make_video(path, [Scene(frames=25 * 25, seed=3, speed=1.0), Scene(frames=30, seed=4)],
                       [Transition(kind="cut")])
    found = detect_transitions(str(path), ADAPTIVE)
    assert found.cuts == truth.cuts
    spans = plan_clips(found, min_clip_s=2.0, max_clip_s=10.0, min_clip_frames=16)
    # 25 s scene -> 3 chunks of ~8.3 s, each starting at the first frame at or after k * 25 s / 3;
    # the 1.2 s scene is too short.
    assert [(s.start, s.end) for s in spans] == [(0, 209), (209, 417), (417, 625)]
    assert all(s.shot == 0 for s in spans) and [s.chunk for s in spans] == [0, 1, 2]


@pytest.mark.parametrize("name", ["bikes.mp4", "cityCC0.mpg", "goldeneye-vfr-drop3.mp4"])
def test_shared_videos_hard_cuts_match_ground_truth(shared_videos, ground_truth, name):
    found = detect_transitions(str(shared_videos / name), ADAPTIVE)
    truth = ground_truth[name]["ground_truth"]["hard_cuts"]
    assert found.cuts == truth
    assert found.frames == ground_truth[name]["technical"]["frames_decoded"]


@pytest.mark.parametrize("detector", ["content", "hash", "histogram"])
def test_every_pyscenedetect_detector_stays_selectable(shared_videos, ground_truth, detector):
    """Each of PySceneDetect's detectors runs through the same split and finds bikes.mp4's cuts (at their
    defaults the hash and histogram detectors miss or add one: that is their accuracy, not the split's)."""
    found = detect_transitions(str(shared_videos / "bikes.mp4"), DetectorConfig(detector=detector))
    truth = ground_truth["bikes.mp4"]["ground_truth"]["hard_cuts"]
    assert found.frames == 250
    hits = sum(any(abs(c - t) <= 1 for c in found.cuts) for t in truth)
    assert hits >= len(truth) - 1 and len(found.cuts) <= len(truth) + 1, found.cuts


def test_vfr_clip_times_come_from_presentation_timestamps(shared_videos, ground_truth):
    found = detect_transitions(str(shared_videos / "goldeneye-vfr-drop3.mp4"), ADAPTIVE)
    cut_times = [found.times[c] for c in found.cuts]
    expected = ground_truth["goldeneye-vfr-drop3.mp4"]["ground_truth"]["hard_cuts_pts_s"]
    assert cut_times == pytest.approx(expected, abs=0.002)


def test_fades_only_video_gives_no_clip_and_no_cut(shared_videos):
    found = detect_transitions(str(shared_videos / "fades.mp4"), ADAPTIVE)
    assert found.cuts == []
    assert plan_clips(found, 2.0, 10.0, 16) == []


def test_static_camera_has_no_cut(shared_videos):
    found = detect_transitions(str(shared_videos / "traffic_camera.mp4"), ADAPTIVE)
    assert found.cuts == [] and found.gradual == []
    spans = plan_clips(found, 2.0, 10.0, 16)
    assert spans[0].start == 0 and spans[-1].end == 576  # the whole video, chunked


def test_corrupt_packet_is_skipped_not_fatal(shared_videos, ground_truth):
    found = detect_transitions(str(shared_videos / "decord-corrupted.mp4"), ADAPTIVE)
    assert found.bad_packets >= 1
    assert found.frames == ground_truth["decord-corrupted.mp4"]["technical"]["frames_decoded"]

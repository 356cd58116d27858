"""TransNetV2's CPU runtime and its gate: ONNX Runtime gives torch's predictions, a CPU run never imports
torch once the export is cached, and the gate changes no event on any file of the shared and synthetic sets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from engine.scenes import DetectorConfig, detect_transitions
from engine.shot_samples import Join, Shot, make_shots, write_shot_set

REPO = Path(__file__).resolve().parents[2]
SHARED_WITH_TRUTH = ["bikes.mp4", "cityCC0.mpg", "goldeneye-vfr-drop3.mp4", "fades.mp4", "traffic_camera.mp4",
                     "flipping_a_pancake.mkv", "smpte-2997.mp4", "mmaction2-test.avi", "carphone_pristine.mp4",
                     "av1_video.mkv", "h264_10bits.mp4"]


def _predict(path: Path, runtime: str):
    from engine.transnet import StreamingTransNet, rgb_48x27

    net = StreamingTransNet(device="cpu", precision="fp32", gate_threshold=0, runtime=runtime)
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            net.push(rgb_48x27(frame))
    return net.finish()


def test_onnx_runtime_gives_the_torch_predictions(tmp_path):
    """The cached ONNX export is the same network: per-frame probabilities within 1e-4 of torch's, over two
    windows holding a cut."""
    path = tmp_path / "v.mp4"
    make_shots(path, [Shot(frames=40, seed=41, motion="pan"), Shot(frames=35, seed=42, motion="shake")],
               [Join(kind="cut")])
    onnx, torch = _predict(path, "onnx"), _predict(path, "torch")
    assert len(onnx.one_hot) == len(torch.one_hot) == 75
    assert max(torch.one_hot) > 0.5  # the cut is there to be seen
    np.testing.assert_allclose(np.asarray(onnx.one_hot), np.asarray(torch.one_hot), atol=1e-4)
    np.testing.assert_allclose(np.asarray(onnx.many_hot), np.asarray(torch.many_hot), atol=1e-4)


def test_onnx_runtime_is_rejected_where_it_cannot_run():
    from engine.scenes import SceneSplit

    problems = SceneSplit(runtime="onnx", precision="bf16").check()
    assert any("'runtime: onnx' runs fp32 on the CPU" in p for p in problems), problems


@pytest.mark.slow
def test_cpu_split_never_imports_torch_once_exported(tmp_path):
    """First run: the export (torch needed, once). Second run, a new process: the split without torch."""
    path = tmp_path / "v.mp4"
    make_shots(path, [Shot(frames=60, seed=43, motion="pan"), Shot(frames=40, seed=44)], [Join(kind="cut")])
    code = ("import sys, json; from engine.scenes import DetectorConfig, detect_transitions; "
            f"t = detect_transitions({str(path)!r}, DetectorConfig(device='cpu')); "
            "print(json.dumps({'cuts': t.cuts, 'torch': 'torch' in sys.modules}))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "VDE_ONNX_CACHE": str(tmp_path / "cache")}
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                      check=True).stdout.splitlines()[-1]) for _ in range(2)]
    assert list((tmp_path / "cache").glob("transnetv2-*.onnx"))
    assert runs[0]["cuts"] == runs[1]["cuts"] == [60]
    assert runs[0]["torch"] and not runs[1]["torch"]


@pytest.mark.slow
def test_gate_changes_no_event_on_any_file(tmp_path, shared_videos):
    """Gated and ungated runs give the same cuts and transitions on every file of both sets, and the gate
    skips the network on still footage (the fixed traffic camera, the SMPTE bars)."""
    files = [shared_videos / name for name in SHARED_WITH_TRUTH if (shared_videos / name).exists()]
    files += [tmp_path / name for name in write_shot_set(tmp_path)]
    gated_total = 0
    for path in files:
        gated = detect_transitions(str(path), DetectorConfig(device="cpu"))
        ungated = detect_transitions(str(path), DetectorConfig(device="cpu", gate_threshold=0))
        assert ungated.gated_windows == 0
        assert (gated.cuts, gated.gradual) == (ungated.cuts, ungated.gradual), path.name
        gated_total += gated.gated_windows
        if path.name in ("traffic_camera.mp4", "smpte-2997.mp4"):
            assert gated.gated_windows == gated.windows, path.name
    assert gated_total >= 10


def test_parallel_videos_give_the_rows_of_one_at_a_time(tmp_path):
    """Three videos split at once in threads (one broken) give exactly the rows of a one-at-a-time split,
    in order, the broken one an error row naming the cause."""
    import pyarrow as pa

    from engine.scenes import SceneSplit

    uris = []
    for k in range(2):
        path = tmp_path / f"v{k}.mp4"
        make_shots(path, [Shot(frames=45, seed=50 + k, motion="pan"), Shot(frames=30 + 10 * k, seed=60 + k)],
                   [Join(kind="cut")])
        uris.append(str(path))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    uris.insert(1, str(broken))
    batch = pa.Table.from_pylist([{"uri": u, "video_id": f"id{k}"} for k, u in enumerate(uris)])
    one = SceneSplit(min_clip_s=0.5, max_clip_s=1.0, min_clip_frames=8).process_batch(batch).to_pylist()
    three = SceneSplit(min_clip_s=0.5, max_clip_s=1.0, min_clip_frames=8, parallel_videos=3).process_batch(batch)
    assert three.to_pylist() == one
    assert [r["scene_cuts"] for r in one if r["video_id"] == "id0"][0] == [45]
    assert [r["scene_cuts"] for r in one if r["video_id"] == "id2"][0] == [45]
    errors = [r for r in one if r.get("status") == "error"]
    assert len(errors) == 1 and errors[0]["video_id"] == "id1" and "cannot open" in errors[0]["error"]

"""Reruns that know what changed: an incremental rerun ends with the bytes of a fresh run of the changed
pipeline, and stages whose inputs did not change compute nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine.cli import main

REPO = Path(__file__).resolve().parents[2]
PIPELINE = """
name: rerun
stages:
  - stage: probe
  - stage: split
    min_clip_s: {min_clip_s}
    max_clip_s: 10.0
  - stage: score
    pairs: {pairs}
    ocr_frames: 1
  - stage: filter
    min_motion: {min_motion}
  - stage: caption
    model: {caption_model}
    frames: 2
    max_pixels: 12544
    max_new_tokens: 8
    resources: {{cpus: 1, gpus: 0}}
  - stage: encode
    vae: tiny:sd-vae
    text_encoder: tiny:clip-text
    buckets: {buckets}
    num_frames: 4
    frame_stride: 2
    device: cpu
    resources: {{cpus: 1, gpus: 0}}
  - stage: shard
    samples_per_shard: 2
"""
BASE = {"min_clip_s": 2.0, "pairs": 4, "min_motion": 0.5, "caption_model": "tiny:qwen2_5_vl",
        "buckets": '["64x64"]'}
CATEGORIZE = """  - stage: categorize
    model: tiny:llm
    resources: {cpus: 1, gpus: 0}
"""
# Files whose bytes must not depend on the history of the output (run.json holds timings and history).
COMPARED = ("manifest/videos", "manifest/clips", "manifest/funnel.json", "shards")


def write_pipeline(folder: Path, name: str, extra: str = "", **changes) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(PIPELINE.format(**{**BASE, **changes}) + extra)
    return path


def run(pipeline: Path, inputs: Path, out: Path, *options: str) -> dict:
    assert main(["run", str(pipeline), "--input", str(inputs), "--output", str(out), "--no-progress", *options]) == 0
    return json.loads((out / "run.json").read_text())


def output_bytes(out: Path) -> dict[str, bytes]:
    files = {}
    for name in COMPARED:
        root = out / name
        for path in sorted([root] if root.is_file() else root.rglob("*") if root.exists() else []):
            if path.is_file():
                files[str(path.relative_to(out))] = path.read_bytes()
    return files


def assert_same_outputs(got: Path, want: Path) -> None:
    a, b = output_bytes(got), output_bytes(want)
    assert sorted(a) == sorted(b), f"files differ: {sorted(set(a) ^ set(b))}"
    differ = [name for name in a if a[name] != b[name]]
    assert not differ, f"bytes differ from a fresh run: {differ}"


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, demo_videos) -> tuple[Path, Path, Path]:
    """The demo videos through the base pipeline once: (inputs, output, pipeline folder)."""
    folder, _ = demo_videos
    root = tmp_path_factory.mktemp("rerun")
    out = root / "base"
    run(write_pipeline(root, "base"), folder, out)
    return folder, out, root


CASES = {
    # name: (pipeline changes, stages that must compute nothing, stages that must compute something)
    "threshold_up": ({"min_motion": 2.0}, ("probe", "split", "score", "caption", "encode"), ("filter",)),
    "threshold_down": ({"min_motion": 0.001}, ("probe", "split", "score"), ("filter", "caption", "encode")),
    "scorer_setting": ({"pairs": 3}, ("probe", "split"), ("score", "filter")),
    "caption_model": ({"caption_model": "tiny:qwen2_vl"}, ("probe", "split", "score", "filter"), ("caption", "encode")),
    "vae_buckets": ({"buckets": '["64x64", "48x80"]'}, ("probe", "split", "score", "filter", "caption"), ("encode",)),
    "split_setting": ({"min_clip_s": 2.5}, ("probe",), ("split", "score", "filter")),
}


@pytest.mark.parametrize("case", ["threshold_up", "threshold_down"])
def test_threshold_rerun_equals_a_fresh_run_and_computes_only_the_filter_and_what_it_lets_through(
        case, base_run, tmp_path):
    _check_case(case, base_run, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["scorer_setting", "caption_model", "vae_buckets", "split_setting"])
def test_rerun_after_a_setting_change_equals_a_fresh_run(case, base_run, tmp_path):
    _check_case(case, base_run, tmp_path)


def _check_case(case: str, base_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    inputs, base, _ = base_run
    changes, idle, busy = CASES[case]
    changed = write_pipeline(tmp_path, case, **changes)
    rerun, fresh = tmp_path / "rerun", tmp_path / "fresh"
    shutil.copytree(base, rerun)
    record = run(changed, inputs, rerun)
    run(changed, inputs, fresh)
    assert_same_outputs(rerun, fresh)
    rows = record["summary"]["stage_rows"]
    assert all(rows[s] == 0 for s in idle), rows
    assert all(rows[s] > 0 for s in busy), rows
    if case == "threshold_down":  # exactly the newly kept clips were captioned
        before = pq.read_table(base / "manifest" / "clips").column("keep").to_pylist()
        after = pq.read_table(rerun / "manifest" / "clips").column("keep").to_pylist()
        assert rows["caption"] == sum(1 for a, b in zip(before, after) if b and not a) > 0


def test_a_stage_added_at_the_end_runs_alone_and_a_plain_rerun_computes_nothing(base_run, tmp_path):
    inputs, base, _ = base_run
    out = tmp_path / "out"
    shutil.copytree(base, out)
    record = run(write_pipeline(tmp_path, "more", extra=CATEGORIZE), inputs, out)
    rows = record["summary"]["stage_rows"]
    assert rows["categorize"] > 0 and all(n == 0 for s, n in rows.items() if s != "categorize"), rows
    again = run(write_pipeline(tmp_path, "more", extra=CATEGORIZE), inputs, out)
    assert set(again["summary"]["stage_rows"].values()) == {0}
    assert again["summary"]["skipped"] == again["summary"]["videos"]


def test_dry_run_prints_the_plan_and_writes_nothing_force_and_from_recompute(base_run, tmp_path, capsys):
    inputs, base, root = base_run
    out = tmp_path / "out"
    shutil.copytree(base, out)
    changed = write_pipeline(tmp_path, "changed", min_motion=2.0)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(["run", str(changed), "--input", str(inputs), "--output", str(out), "--dry-run",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().err
    assert "score          reuses all 7 clips" in printed and "filter         runs on 7 clips" in printed
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    rows = run(root / "base.yaml", inputs, out, "--from", "caption")["summary"]["stage_rows"]
    assert rows["score"] == 0 and rows["caption"] == rows["encode"] > 0
    rows = run(root / "base.yaml", inputs, out, "--force")["summary"]["stage_rows"]
    assert rows["probe"] == 3 and rows["score"] == 7
    assert_same_outputs(out, base)
    assert main(["run", str(changed), "--input", str(inputs), "--output", str(out), "--from", "nosuch"]) == 2


def test_the_completion_index_gives_the_plan_the_stored_results_give(base_run, tmp_path, capsys, monkeypatch):
    """The real stages over the demo, one input broken: the check from the index prints the plan the walk over
    every stored result prints, and reads none of them."""
    inputs, base, root = base_run
    folder = tmp_path / "in"
    shutil.copytree(inputs, folder)
    (folder / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    run(root / "base.yaml", folder, out)
    from engine import completion
    from engine.results import ResultStore

    def plan() -> str:
        capsys.readouterr()
        assert main(["run", str(root / "base.yaml"), "--input", str(folder), "--output", str(out), "--dry-run",
                     "--no-progress"]) == 0
        return capsys.readouterr().err

    loads = []
    original = ResultStore.load
    monkeypatch.setattr(ResultStore, "load", lambda self: loads.append(self) or original(self))
    from_index = plan()
    assert not loads
    (out / completion.INDEX).unlink()
    assert plan() == from_index and loads
    assert "probe          reuses all 4 videos" in from_index and "score          reuses all 7 clips" in from_index


def test_input_changes_are_detected_handled_and_reported(base_run, tmp_path):
    inputs, base, root = base_run
    names = sorted(p.name for p in inputs.glob("*.mp4"))
    folder = tmp_path / "in"
    folder.mkdir()
    for name in names:
        shutil.copy(inputs / name, folder / name)
    out = tmp_path / "out"
    run(root / "base.yaml", folder, out)
    from engine.synthetic import Scene, Transition, make_video

    (folder / names[0]).unlink()  # removed
    make_video(folder / "added.mp4", [Scene(frames=60, seed=31, speed=2.0), Scene(frames=60, seed=32, speed=1.0)],
               [Transition(kind="cut")], width=160, height=96)  # added
    make_video(folder / names[1], [Scene(frames=70, seed=41, speed=3.0)], [], width=160, height=96)  # replaced
    record = run(root / "base.yaml", folder, out)
    changes = record["summary"]["inputs_changed"]
    assert changes == {"added": [str(folder / "added.mp4")], "removed": [str(folder / names[0])],
                       "replaced": [str(folder / names[1])]}
    fresh = tmp_path / "fresh"
    run(root / "base.yaml", folder, fresh)
    videos = pq.read_table(out / "manifest" / "videos").to_pylist()
    assert sorted(v["uri"] for v in videos) == sorted(v["uri"] for v in pq.read_table(fresh / "manifest" / "videos")
                                                      .to_pylist())
    assert len({v["video_id"] for v in videos}) == len(videos)  # one row per content, no stale row
    shards = json.loads((out / "shards" / "index.json").read_text())
    assert shards == json.loads((fresh / "shards" / "index.json").read_text())


CRASH = """
import os, sys
import fsspec.implementations.local as local
calls = [0]
original = local.LocalFileSystem.mv
def mv(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] == int(os.environ["VDE_TEST_CRASH_AT"]):
        os._exit(137)  # as if killed -9 just before this rename
    return original(self, *args, **kwargs)
local.LocalFileSystem.mv = mv
from engine.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _crash_run(pipeline: Path, inputs: Path, out: Path, at: int) -> int:
    env = {**os.environ, "VDE_TEST_CRASH_AT": str(at), "PYTHONPATH": str(REPO)}
    args = ["run", str(pipeline), "--input", str(inputs), "--output", str(out), "--no-progress"]
    return subprocess.run([sys.executable, "-c", CRASH, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode


def _kill_points(all_points: bool) -> list[int]:
    return list(range(1, 60)) if all_points else [1, 4, 9, 15]


@pytest.mark.parametrize("all_points", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_killed_at_a_rename_during_an_incremental_rerun_then_rerun_gives_a_fresh_runs_bytes(
        all_points, base_run, tmp_path):
    inputs, base, _ = base_run
    changed = write_pipeline(tmp_path, "changed", min_motion=0.001)
    fresh = tmp_path / "fresh"
    run(changed, inputs, fresh)
    for at in _kill_points(all_points):
        out = tmp_path / f"killed{at}"
        shutil.copytree(base, out)
        if _crash_run(changed, inputs, out, at) == 0:
            break  # the run has fewer renames than this: every point was tried
        if at > 1:  # the first rename puts the in-progress marker in place: from then on readers know
            assert (out / "_state" / "in_progress.json").exists()
        run(changed, inputs, out)
        assert_same_outputs(out, fresh)
        assert not (out / "_state" / "in_progress.json").exists()


def test_encode_before_caption_is_rejected(tmp_path):
    from engine.pipeline import PipelineError, parse_pipeline

    text = PIPELINE.format(**BASE)
    caption = text[text.index("  - stage: caption"):text.index("  - stage: encode")]
    encode = text[text.index("  - stage: encode"):text.index("  - stage: shard")]
    swapped = text.replace(caption + encode, encode + caption)
    with pytest.raises(PipelineError) as raised:
        parse_pipeline(swapped, check_models=False)
    assert "'caption'" in str(raised.value) and "move encode after caption" in str(raised.value)


def test_readers_see_the_last_complete_generation_and_refuse_a_half_committed_one(base_run, tmp_path, capsys):
    from engine import generation

    _, base, _ = base_run
    out = tmp_path / "out"
    shutil.copytree(base, out)
    committed = json.loads((out / "run.json").read_text())
    assert committed["generation"] >= 1 and not (out / "_state" / "in_progress.json").exists()
    marker = generation.begin(str(out), "later-run")
    assert marker["generation"] == committed["generation"] + 1
    assert main(["inspect", str(out)]) == 0  # still working: the previous generation is whole
    assert "in progress or was interrupted" in " ".join(capsys.readouterr().err.split())
    generation.set_phase(str(out), marker, generation.COMMITTING)
    for command in (["inspect", str(out)], ["verify", str(out)]):
        assert main(command) == 2, command
        assert "interrupted while replacing the outputs" in " ".join(capsys.readouterr().err.split())
    assert main(["report", str(out)]) == 2  # says so through the log
    generation.finish(str(out))
    assert main(["inspect", str(out)]) == 0

"""The dedup stage on videos with known copies: a re-encoded half-size copy, a cropped copy and a copy with
another intro of one video group with it clip for clip; a distinct video and the shared test set do not.
Also: the embeddings files, the kept-clip rule, determinism, resume after a crash, incremental reruns and
the search itself (k-means, spill, components) on planted duplicates."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.executors.local import LocalExecutor
from engine.pipeline import PipelineError, parse_pipeline
from engine.run import run_pipeline
from engine.synthetic import Scene, Transition, _render_scene, make_video
from engine.video import open_video, probe_video
from filters import embeddings
from filters.dedup import Dedup
from filters.semdedup import SearchOptions, components, similar_pairs
from tests.filters.conftest import write_frames

# tiny:clip is untrained: its embeddings of any two clips are ~0.98 alike, of copies above 0.998 (measured
# on these videos and the shared set), so the tests use a threshold between the two.
THRESHOLD = 0.997
PIPELINE = f"""
name: dedup-test
stages:
  - stage: probe
  - stage: split
    min_clip_s: 2.0
    max_clip_s: 10.0
  - stage: clip_score
    clip_model: tiny:clip
    aesthetic_head: tiny:aesthetic-head
    frames: 5
    device: cpu
  - stage: filter
    min_duration_s: 2.0
    missing: keep
  - stage: dedup
    threshold: {THRESHOLD}
  - stage: write_clips          # after the barrier: it must never see a duplicate
    max_side: 96
"""
SHOTS = [Scene(frames=60, seed=21, speed=1.0), Scene(frames=60, seed=22, speed=0.5, object_speed=1.0),
         Scene(frames=60, seed=23, speed=0.0, object_speed=2.0)]
INTRO = 60  # frames of the other intro


def _frames(path: Path) -> list[np.ndarray]:
    reader = open_video(str(path))
    frames = reader.get_frames(list(range(probe_video(str(path)).frames)))
    reader.close()
    return list(frames)


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> Path:
    """orig.mp4 (3 shots, hard cuts), its copies half.mp4 / crop.mp4 / intro.mp4 / same_bytes.mp4, and
    other.mp4."""
    folder = tmp_path_factory.mktemp("family")
    make_video(folder / "orig.mp4", SHOTS, [Transition(kind="cut")] * 2)
    frames = _frames(folder / "orig.mp4")
    write_frames(folder / "half.mp4", [cv2.resize(f, (160, 90), interpolation=cv2.INTER_AREA) for f in frames])
    write_frames(folder / "crop.mp4", [np.ascontiguousarray(f[18:162, 32:288]) for f in frames])  # 80% centre
    intro, _ = _render_scene(Scene(frames=INTRO, seed=41, speed=1.0), 320, 180)
    write_frames(folder / "intro.mp4", [f[:, :, ::-1] for f in intro] + frames)
    make_video(folder / "other.mp4", [Scene(frames=60, seed=31, speed=1.0), Scene(frames=60, seed=32, speed=2.0)],
               [Transition(kind="cut")])
    shutil.copy(folder / "orig.mp4", folder / "same_bytes.mp4")  # caught at ingest, never decoded
    return folder


def _run(inputs: Path | str, out: Path, text: str = PIPELINE):
    return run_pipeline(parse_pipeline(text), str(inputs), str(out), LocalExecutor(progress=False), on_error="raise")


def _shot(row: dict) -> int | None:
    """Which shot of orig.mp4 a clip shows (None: the other intro or another video)."""
    name = Path(row["uri"]).name
    if name == "other.mp4":
        return None
    start = row["start_frame"] - (INTRO if name == "intro.mp4" else 0)
    return None if start < 0 else start // 60


@pytest.fixture(scope="module")
def result(family, tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("dedup") / "out"
    _run(family, out)
    return out, pq.read_table(out / "manifest" / "clips").to_pylist()


def test_copies_group_with_their_source_and_one_clip_of_each_group_is_kept(result) -> None:
    out, rows = result
    by_shot: dict[int, list[dict]] = {}
    for row in rows:
        if _shot(row) is not None:
            by_shot.setdefault(_shot(row), []).append(row)
    assert sorted(by_shot) == [0, 1, 2]
    for shot, members in by_shot.items():
        assert sorted(Path(r["uri"]).name for r in members) == ["crop.mp4", "half.mp4", "intro.mp4", "orig.mp4"]
        kept = [r for r in members if r["keep"]]
        assert len(kept) == 1, f"shot {shot}: {[(r['clip_id'], r['keep'], r['drop_reason']) for r in members]}"
        best = max(members, key=lambda r: (r["aesthetic_mean"], r["clip_duration_s"], [-ord(c) for c in r["clip_id"]]))
        assert kept[0]["clip_id"] == best["clip_id"]  # highest aesthetic, then longest, then lowest id
        for row in members:
            if row is kept[0]:
                assert row["duplicate_of"] is None
                continue
            assert row["duplicate_of"] == best["clip_id"] and row["duplicate_cosine"] >= THRESHOLD
            assert re.fullmatch(rf"duplicate of {best['clip_id']} \(cosine \d\.\d\d\)", row["drop_reason"])
    # Distinct content is untouched: the other video and the other intro.
    distinct = [r for r in rows if _shot(r) is None]
    assert len(distinct) == 3, [(Path(r["uri"]).name, r["start_frame"], r["end_frame"]) for r in rows][-8:]
    assert all(r["keep"] and r["duplicate_of"] is None for r in distinct)
    # The stage after the barrier wrote exactly the kept clips.
    assert all((r["clip_uri"] is not None) == bool(r["keep"]) for r in rows)
    assert sorted(p.name for p in (out / "clips").iterdir()) == sorted(f"{r['clip_id']}.mp4" for r in rows if r["keep"])
    videos = {Path(v["uri"]).name: v for v in pq.read_table(out / "manifest" / "videos").to_pylist()}
    same = videos["same_bytes.mp4"]
    assert same["status"] == "error" and same["error_stage"] == "ingest" and "orig.mp4" in same["error"]
    assert "same_bytes.mp4" not in {Path(r["uri"]).name for r in rows}
    summary = __import__("json").loads((out / "manifest" / "dedup.json").read_text())
    assert summary["duplicates"] == 9 and summary["groups"] == 3 and summary["model"] == "tiny:clip"


def test_embeddings_are_parquet_fp16_keyed_by_clip_id_and_duckdb_reads_them(result) -> None:
    import duckdb

    out, rows = result
    table = embeddings.read(str(out))
    assert table.schema.field("embedding").type == pa.list_(pa.float16(), 32)
    assert table.column("clip_id").to_pylist() == sorted(r["clip_id"] for r in rows)
    assert embeddings.model_of(table) == "tiny:clip" and set(table.column("model").to_pylist()) == {"tiny:clip"}
    vectors = embeddings.matrix(table).astype(np.float32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
    got = duckdb.sql(f"SELECT clip_id, embedding, model FROM '{out}/embeddings/*.parquet' ORDER BY clip_id").fetchall()
    assert [g[0] for g in got] == table.column("clip_id").to_pylist()
    assert np.allclose(np.array(got[0][1], np.float32), vectors[0], atol=1e-3) and got[0][2] == "tiny:clip"


def test_the_decision_does_not_depend_on_row_order(result) -> None:
    out, rows = result
    clips = pa.Table.from_pylist(rows).drop_columns(["duplicate_of", "duplicate_cosine"])
    clips = clips.set_column(clips.schema.get_field_index("keep"), "keep", pa.array([True] * len(rows)))
    clips = clips.set_column(clips.schema.get_field_index("drop_reason"), "drop_reason",
                             pa.array([None] * len(rows), pa.string()))
    stored = embeddings.read(str(out))
    stage = Dedup(threshold=THRESHOLD)
    first, _ = stage.decide(clips, stored)
    order = np.random.default_rng(0).permutation(len(rows))
    second, _ = stage.decide(clips.take(pa.array(order)), stored)
    assert sorted(first.to_pylist(), key=lambda r: r["clip_id"]) == sorted(second.to_pylist(), key=lambda r: r["clip_id"])
    assert {r["clip_id"]: r["duplicate_of"] for r in first.to_pylist()} == {r["clip_id"]: r["duplicate_of"] for r in rows}


def _dedup_view(out: Path) -> list[dict]:
    table = pq.read_table(out / "manifest" / "clips")
    columns = ["clip_id", "status", "keep", "drop_reason", "duplicate_of", "duplicate_cosine", "aesthetic_mean"]
    rows = table.select(columns).to_pylist()
    uris = table.column("clip_uri").to_pylist()
    return [{**r, "written": u is not None} for r, u in zip(rows, uris)]


def test_a_rerun_after_a_crash_gives_the_uninterrupted_result(family, result, tmp_path) -> None:
    reference, _ = result
    for crash in ("before the barrier", "after the barrier"):
        out = tmp_path / crash.replace(" ", "_")
        shutil.copytree(reference, out)
        shutil.rmtree(out / "manifest")
        (out / "run.json").unlink()
        after = sorted((out / "_state").glob("parts-after-*/*.parquet"))
        if crash == "before the barrier":  # some videos never finished the stages before the barrier
            for part in sorted((out / "_state" / "parts").glob("*.parquet"))[::2]:
                part.unlink()
            for part in after:
                part.unlink()
        else:  # the barrier ran, the stages after it finished some videos only
            for part in after[::2]:
                part.unlink()
        _run(family, out)
        assert _dedup_view(out) == _dedup_view(reference), crash


def test_new_videos_are_compared_with_the_old_ones(family, result, tmp_path) -> None:
    """A first run without the copies, then a rerun with them, equals one run over everything; the copy that
    now wins a group takes over from the clip the first run kept (whose clip file stage result is cleared)."""
    reference, _ = result
    first = tmp_path / "first"
    first.mkdir()
    for name in ("orig.mp4", "other.mp4"):
        shutil.copy(family / name, first / name)
    out = tmp_path / "out"
    _run(first, out)
    before = {r["clip_id"]: r for r in _dedup_view(out)}
    assert all(r["keep"] for r in before.values())
    _run(family, out)
    after = _dedup_view(out)
    assert after == _dedup_view(reference)
    newly_dropped = [r for r in after if r["clip_id"] in before and not r["keep"]]
    assert all(not r["written"] for r in newly_dropped)


@pytest.mark.slow
def test_distinct_videos_of_the_shared_set_are_not_duplicates(shared_videos, tmp_path) -> None:
    """Cross-video groups only where the files show the same thing: carphone_pristine/distorted (one sequence
    at two bit rates) and av1_video/decord-corrupted (the same colour-bar test pattern with a seconds digit)."""
    out = tmp_path / "out"
    _run(shared_videos, out, PIPELINE.replace("min_clip_s: 2.0", "min_clip_s: 1.0").replace("min_duration_s: 2.0",
                                                                                           "min_duration_s: 1.0"))
    rows = pq.read_table(out / "manifest" / "clips").to_pylist()
    name = {r["clip_id"]: Path(r["uri"]).name for r in rows}
    pairs = {frozenset({name[r["clip_id"]], name[r["duplicate_of"]]}) for r in rows if r["duplicate_of"]}
    across = {p for p in pairs if len(p) == 2}
    same_content = {frozenset({"carphone_pristine.mp4", "carphone_distorted.mp4"}),
                    frozenset({"av1_video.mkv", "decord-corrupted.mp4"})}
    assert across <= same_content, across - same_content
    assert frozenset({"carphone_pristine.mp4", "carphone_distorted.mp4"}) in across
    assert len(rows) >= 15 and sum(bool(r["keep"]) for r in rows) >= 10


# -- the search itself -------------------------------------------------------------------------------------


def _planted(n: int, dim: int, copies: int, seed: int = 0) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """Clustered unit vectors (100 topics) and `copies` near copies (cosine ~0.95) of random ones."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(100, dim)).astype(np.float32)
    x = topics[rng.integers(0, 100, n)] + rng.normal(size=(n, dim)).astype(np.float32)
    source = rng.choice(n, copies, replace=False)
    copy = x[source] / np.linalg.norm(x[source], axis=1, keepdims=True)
    copy += rng.normal(size=copy.shape).astype(np.float32) * 0.3 / np.sqrt(dim)
    vectors = np.concatenate([x, copy])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float16), {(int(s), n + k) for k, s in enumerate(source)}


def test_kmeans_search_finds_planted_copies_and_nothing_else() -> None:
    vectors, truth = _planted(6000, 64, 300)
    i, j, cos = similar_pairs(vectors, SearchOptions(threshold=0.9))  # 6300 points: k-means, 79 clusters
    assert set(zip(i.tolist(), j.tolist())) == truth and (cos >= 0.9).all()
    again = similar_pairs(vectors, SearchOptions(threshold=0.9))
    assert all(np.array_equal(a, b) for a, b in zip((i, j, cos), again))


def test_spill_finds_pairs_across_a_cluster_border() -> None:
    # Two centroids; a pair straddling the border between them, each point nearest a different centroid.
    centroids = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    a, b = np.array([np.cos(0.77), np.sin(0.77)]), np.array([np.cos(0.80), np.sin(0.80)])
    far = np.array([[1.0, 0.0], [0.0, 1.0]])
    vectors = np.vstack([a, b, far]).astype(np.float32)
    plain = similar_pairs(vectors, SearchOptions(threshold=0.99, spill=1), centroids=centroids)
    spilled = similar_pairs(vectors, SearchOptions(threshold=0.99, spill=2), centroids=centroids)
    assert len(plain[0]) == 0
    assert list(zip(spilled[0].tolist(), spilled[1].tolist())) == [(0, 1)]


def test_components_are_labelled_by_their_smallest_member() -> None:
    label = components(6, np.array([4, 1, 3]), np.array([5, 3, 5]))
    assert label.tolist() == [0, 1, 2, 1, 1, 1]


def test_pipeline_errors_name_what_to_change() -> None:
    with pytest.raises(PipelineError) as err:
        parse_pipeline("stages:\n  - stage: probe\n  - stage: split\n  - stage: dedup\n    threshold: 1.5\n")
    text = str(err.value)
    assert "'threshold' is a cosine similarity within (0, 1], got 1.5" in text
    with pytest.raises(PipelineError) as err:
        parse_pipeline("stages:\n  - stage: probe\n  - stage: split\n  - stage: dedup\n", check_models=False)
    assert "reads column 'clip_frames_scored'" in str(err.value) and "clip_score" in str(err.value)


def test_the_funnel_and_the_dashboard_count_duplicates(result) -> None:
    import json

    from dashboard.data import collect

    out, rows = result
    steps = json.loads((out / "manifest" / "funnel.json").read_text())["steps"]
    assert steps[-1]["rule"] == "dedup" and steps[-1]["removed"] == 9
    assert steps[-1]["remaining"] == sum(bool(r["keep"]) for r in rows)
    data = collect(str(out), gallery=4)
    funnel = {step["key"]: step["count"] for step in data.funnel}
    assert funnel["passed_filters"] == len(rows) and funnel["kept"] == len(rows) - 9
    assert {r["reason"]: r["count"] for r in data.reasons} == {"duplicate (dedup)": 9}


@pytest.mark.slow
def test_sigkill_before_and_after_the_barrier_then_rerun(family, result, tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    reference, _ = result
    pipeline = tmp_path / "dedup.yaml"
    pipeline.write_text(PIPELINE)
    repo = Path(__file__).resolve().parents[2]

    def vde(out: Path) -> subprocess.Popen:  # one video per part, so a kill can fall between any two
        code = ("import sys; from engine.executors.local import LocalExecutor; from engine.pipeline import "
                "load_pipeline; from engine.run import run_pipeline; run_pipeline(load_pipeline(sys.argv[1]), "
                "sys.argv[2], sys.argv[3], LocalExecutor(videos_per_part=1, progress=False))")
        return subprocess.Popen([sys.executable, "-c", code, str(pipeline), str(family), str(out)], cwd=repo,
                                env={**os.environ, "PYTHONPATH": str(repo)}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    # Stored results of a stage before the barrier and of the one after it (engine.results).
    for where, pattern in (("before", "_state/results/clip_score-*/*.parquet"),
                           ("after", "_state/results/write_clips-*/*.parquet")):
        out = tmp_path / where
        proc = vde(out)
        deadline = time.time() + 300
        while time.time() < deadline and len(list(out.glob(pattern))) < 2 and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / "run.json").exists(), f"the run finished before it could be killed ({where})"
        assert vde(out).wait() == 0
        assert _dedup_view(out) == _dedup_view(reference), where


@pytest.mark.slow
def test_ray_executor_runs_the_barrier_like_the_local_one(family, result, tmp_path) -> None:
    from engine.executors.ray_executor import RayExecutor

    reference, _ = result
    executor = RayExecutor(num_cpus=4, progress=False)
    try:
        run_pipeline(parse_pipeline(PIPELINE), str(family), str(tmp_path / "ray"), executor, on_error="raise")
    finally:
        executor.shutdown()
    assert _dedup_view(tmp_path / "ray") == _dedup_view(reference)

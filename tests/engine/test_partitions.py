"""Partitioned manifests and results: the same rows as one file, bounded files, exact reruns (engine.simulate)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from engine import results, simulate
from engine.executors.local import LocalExecutor
from engine.partitions import partition_of
from engine.run import run_pipeline

REPO = Path(__file__).resolve().parents[2]
VIDEOS, CLIPS_PER_VIDEO = 300, 4


def _run(out: Path, inputs: str, partitions: int | None = None, per_part: int = 25, **pipeline) -> None:
    run_pipeline(simulate.pipeline(clips_per_video=CLIPS_PER_VIDEO, **pipeline), inputs, str(out),
                 LocalExecutor(videos_per_part=per_part, progress=False), on_error="raise", partitions=partitions)


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every manifest and shard index file."""
    files = sorted([*folder.glob("manifest/*/*.parquet"), folder / "shards" / "index.json"])
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> str:
    return simulate.write_input_list(str(tmp_path_factory.mktemp("in") / "inputs.txt"), VIDEOS)


@pytest.fixture(scope="module")
def one_part(tmp_path_factory, inputs) -> Path:
    out = tmp_path_factory.mktemp("one") / "out"
    _run(out, inputs, partitions=1)
    return out


def test_partition_of_keeps_id_order_and_spreads_content_ids():
    rng = np.random.default_rng(0)
    alphabet = list("0123456789abcdef-uzA: ü")
    others = {"".join(rng.choice(alphabet, rng.integers(0, 9))) for _ in range(5_000)}  # error ids, anything
    ids = sorted({hashlib.blake2b(str(i).encode(), digest_size=8).hexdigest() for i in range(20_000)} | others,
                 key=str.encode)  # Arrow's order: by bytes
    where = partition_of(pa.array(ids), 7)
    assert (np.diff(where) >= 0).all()  # sorted ids -> non-decreasing partitions
    assert where.min() >= 0 and where.max() <= 6
    counts = np.bincount(where[[len(i) == 16 for i in ids]], minlength=7)
    assert counts.min() > 0.8 * counts.mean()  # hex ids balanced within 20%


def test_partitioned_manifest_holds_the_rows_of_one_file_in_the_same_order(one_part, inputs, tmp_path):
    out = tmp_path / "parts"
    _run(out, inputs, partitions=5)
    for name in ("videos", "clips"):
        parts = sorted((out / "manifest" / name).glob("*.parquet"))
        assert [p.name for p in parts] == [f"part-{k:05d}.parquet" for k in range(5)]
        together = pa.concat_tables([pq.read_table(p) for p in parts])
        single = pq.read_table(one_part / "manifest" / name / "part-00000.parquet")
        assert together.equals(single), name
    clips = pq.read_table(out / "manifest" / "clips")  # pyarrow reads the folder as one dataset
    assert clips.num_rows == VIDEOS * CLIPS_PER_VIDEO
    assert ds.dataset(out / "manifest" / "clips").count_rows() == clips.num_rows
    ids = clips.column("video_id").to_pylist()
    assert ids == sorted(ids)  # parts in name order: globally sorted
    kept = clips.filter(clips.column("keep"))
    assert kept.column("shard").null_count == 0  # the finalize's column joined into every partition
    assert clips.column("shard").null_count == clips.num_rows - kept.num_rows


def test_results_are_few_files_and_a_rerun_computes_nothing(one_part, inputs, tmp_path):
    stores = sorted((one_part / "_state" / "results").iterdir())
    assert len(stores) == len(simulate.STAGES)
    parts = VIDEOS // 25  # one work unit = one part per stage (fewer once merged)
    assert all(len(list(s.glob("*.parquet"))) <= parts for s in stores)
    assert not (one_part / "_state" / "spool").exists()
    plans = []
    run_pipeline(simulate.pipeline(clips_per_video=CLIPS_PER_VIDEO), inputs, str(one_part),
                 LocalExecutor(progress=False), dry_run=True, on_plan=plans.append)
    assert plans[0].pending_videos == set()


def test_many_small_parts_are_merged_after_the_run_and_read_back_the_same(inputs, one_part, tmp_path):
    out = tmp_path / "small"
    _run(out, inputs, partitions=1, per_part=1)  # a part per video and stage: more than LOOSE_PARTS
    for store in (out / "_state" / "results").iterdir():
        names = [p.name for p in store.glob("*.parquet")]
        assert names and all(n.startswith("0-") for n in names), store.name
    assert _digest(out) == _digest(one_part)
    before = {s.name: pq.read_table(s).sort_by("_key") for s in (out / "_state" / "results").iterdir()}
    stage = simulate.SimScore()
    fingerprint = next(n for n in before if n.startswith("sim_score")).split("-", 1)[1]
    store = results.ResultStore(str(out), stage, fingerprint, simulate.pipeline().schema_after(2)).load()
    assert store.table.num_rows == VIDEOS * CLIPS_PER_VIDEO
    assert store.table.select(before[f"sim_score-{fingerprint}"].column_names).sort_by("_key") \
        .equals(before[f"sim_score-{fingerprint}"])


def test_a_changed_threshold_reruns_the_filter_only_and_equals_a_fresh_run(one_part, inputs, tmp_path):
    rerun = tmp_path / "rerun"
    import shutil

    shutil.copytree(one_part, rerun)
    _run(rerun, inputs, partitions=1, min_motion=0.5)
    fresh = tmp_path / "fresh"
    _run(fresh, inputs, partitions=1, min_motion=0.5)
    assert _digest(rerun) == _digest(fresh)
    assert _digest(rerun) != _digest(one_part)


KILLED = """
import sys
from engine import simulate
from engine.executors.local import LocalExecutor
from engine.run import run_pipeline
run_pipeline(simulate.pipeline(clips_per_video=4), sys.argv[1], sys.argv[2],
             LocalExecutor(videos_per_part=5, progress=False), on_error="raise", partitions=3)
"""


@pytest.mark.parametrize("after_parts", [2, 20])
def test_killed_mid_run_then_rerun_gives_the_uninterrupted_bytes(inputs, tmp_path, after_parts):
    reference = tmp_path / "reference"
    _run(reference, inputs, partitions=3, per_part=5)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, inputs, str(out)], cwd=REPO, env=env)
    store = out / "_state" / "results"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(store.glob("sim_filter-*/*.parquet"))) < after_parts \
            and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "run.json").exists(), "the run finished before it could be killed"
    _run(out, inputs, partitions=3, per_part=5)
    assert _digest(out) == _digest(reference)
    assert not (out / "_state" / "spool").exists()


@pytest.mark.slow
def test_the_demo_gives_the_same_manifest_rows_in_one_part_and_in_three(tmp_path):
    from engine.pipeline import load_pipeline
    from engine.synthetic import write_demo_videos

    inputs = tmp_path / "in"
    write_demo_videos(inputs)
    rows = {}
    for partitions in (1, 3):
        out = tmp_path / f"p{partitions}"
        run_pipeline(load_pipeline("demo"), str(inputs), str(out), LocalExecutor(progress=False),
                     on_error="raise", partitions=partitions)
        assert len(list((out / "manifest" / "clips").glob("*.parquet"))) == partitions
        for name in ("videos", "clips"):  # paths under the output root (clip files, latents) named alike
            table = pq.read_table(out / "manifest" / name)
            rows[partitions, name] = [{k: v.replace(str(out), "OUT") if isinstance(v, str) else v
                                       for k, v in r.items()} for r in table.to_pylist()]
    for name in ("videos", "clips"):
        one, three = rows[1, name], rows[3, name]
        key = "clip_id" if name == "clips" else "video_id"
        assert one and sorted(one, key=lambda r: r[key]) == sorted(three, key=lambda r: r[key]), name

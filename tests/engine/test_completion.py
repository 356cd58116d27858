"""The completion index: a rerun's check from one small file says exactly what the walk over every stored result
says, reads no stored result when nothing changed, and never outlives a run that did not commit."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pytest

from engine import completion, simulate
from engine.executors.local import LocalExecutor
from engine.pipeline import Pipeline
from engine.results import ResultStore
from engine.run import run_pipeline
from engine.stage import RunContext, Stage

VIDEOS, CLIPS_PER_VIDEO, PARTITIONS = 240, 3, 8


def _sim(**changes) -> Pipeline:
    return simulate.pipeline(clips_per_video=CLIPS_PER_VIDEO, **changes)


def _run(pipeline: Pipeline, inputs: str, out: Path, **options):
    return run_pipeline(pipeline, inputs, str(out), LocalExecutor(videos_per_part=40, progress=False),
                        partitions=PARTITIONS, **options)


def _check(pipeline: Pipeline, inputs: str, out: Path, monkeypatch) -> tuple[list[dict], int]:
    """The dry-run plan, asserted equal to the one the stored results alone give; and how many stored-result
    loads the check with the index made."""
    loads = []
    original = ResultStore.load
    monkeypatch.setattr(ResultStore, "load", lambda self: loads.append(self.folder) or original(self))
    plans = []
    _run(pipeline, inputs, out, dry_run=True, on_plan=plans.append)
    with_index = len(loads)
    index = out / completion.INDEX
    if index.exists():
        index.rename(out / "index.kept")
    _run(pipeline, inputs, out, dry_run=True, on_plan=plans.append)
    if (out / "index.kept").exists():
        (out / "index.kept").rename(index)
    got, want = ([dataclasses.asdict(s) for s in p.steps] for p in plans)
    assert got == want
    assert plans[0].describe() == plans[1].describe()
    return got, with_index


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> str:
    return simulate.write_input_list(str(tmp_path_factory.mktemp("in") / "inputs.txt"), VIDEOS)


@pytest.fixture(scope="module")
def done(tmp_path_factory, inputs) -> Path:
    out = tmp_path_factory.mktemp("done") / "out"
    _run(_sim(), inputs, out, on_error="raise")
    return out


def test_an_unchanged_rerun_is_checked_from_the_index_alone(done, inputs, monkeypatch):
    steps, loads = _check(_sim(), inputs, done, monkeypatch)
    assert loads == 0  # not one stored result read
    assert [s["run"] + s["maybe"] for s in steps] == [0] * len(steps)
    assert steps[0]["reused"] == VIDEOS and steps[2]["reused"] == VIDEOS * CLIPS_PER_VIDEO


def test_added_videos_are_planned_from_stored_results_and_the_rest_from_the_index(done, inputs, tmp_path,
                                                                                 monkeypatch):
    more = simulate.write_input_list(str(tmp_path / "more.txt"), VIDEOS + 1)
    steps, loads = _check(_sim(), more, done, monkeypatch)
    assert loads == len(simulate.STAGES)  # the one partition the added video falls in
    assert steps[0]["reused"] == VIDEOS and steps[0]["run"] == 1
    videos = pa.table({"video_id": pa.array(_video_ids(done))})
    stages = _sim().stages
    from engine.results import stage_fingerprints

    known, rest = completion.read(str(done), stages, stage_fingerprints(stages), videos, PARTITIONS)
    assert known.videos == VIDEOS and rest.num_rows == 0


def test_a_changed_setting_is_planned_from_stored_results(done, inputs, monkeypatch):
    steps, loads = _check(_sim(min_motion=0.5), inputs, done, monkeypatch)
    assert loads > 0
    names = [s["stage"] for s in steps]
    assert steps[names.index("sim_filter")]["run"] == VIDEOS * CLIPS_PER_VIDEO


def test_a_run_that_does_not_commit_leaves_no_index(done, inputs, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(done, out)
    assert (out / completion.INDEX).exists()
    broken = Pipeline(name="broken", source="<test>", text="", stages=[*_sim().stages, Fails(on="")])
    with pytest.raises(RuntimeError, match="broken on purpose"):
        _run(broken, inputs, out, on_error="raise")
    assert not (out / completion.INDEX).exists()


@dataclass(kw_only=True)
class Fails(Stage):
    """Raises an unexpected error on clips whose id contains ``on`` (every clip for "")."""

    name: ClassVar[str] = "fails"
    reads: ClassVar[tuple[str, ...]] = ("clip_id",)
    adds: ClassVar[dict[str, pa.DataType]] = {"checked": pa.bool_()}
    on: str = ""

    def process_batch(self, batch: pa.Table) -> pa.Table:
        if any(self.on in c for c in batch.column("clip_id").to_pylist()):
            raise RuntimeError("broken on purpose")
        return batch.append_column("checked", pa.array([True] * batch.num_rows))


def test_a_partition_with_an_unexpected_error_is_planned_from_stored_results(done, inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    victim = _video_ids(done)[0]
    pipeline = Pipeline(name="flaky", source="<test>", text="", stages=[*_sim().stages, Fails(on=victim)])
    _run(pipeline, inputs, out)
    steps, loads = _check(pipeline, inputs, out, monkeypatch)
    assert loads > 0
    assert steps[-1]["run"] == CLIPS_PER_VIDEO  # the failed clips are retried


def _video_ids(out: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(out / "manifest" / "videos", columns=["video_id"]).column("video_id").to_pylist()



def test_a_rerun_that_reused_rows_leaves_an_index_that_says_what_the_stores_say(done, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(done, out)
    more = simulate.write_input_list(str(tmp_path / "more.txt"), VIDEOS + 7)
    _run(_sim(), more, out, on_error="raise")  # most videos are finished from stored results on the driver
    steps, loads = _check(_sim(), more, out, monkeypatch)
    assert loads == 0
    assert steps[0]["reused"] == VIDEOS + 7 and steps[1]["reused"] == VIDEOS + 7


@dataclass(kw_only=True)
class DropOdd(Stage):
    """A barrier dropping every clip whose id ends in an odd digit."""

    name: ClassVar[str] = "drop_odd"
    adds: ClassVar[dict[str, pa.DataType]] = {"keep": pa.bool_()}
    barrier: ClassVar[bool] = True

    def process_batch(self, batch: pa.Table) -> pa.Table:
        return batch

    def finalize(self, ctx: RunContext, clips: pa.Table) -> pa.Table:
        ids = clips.column("clip_id").to_pylist()
        keep = [bool(k) and int(c[-1], 16) % 2 == 0 for c, k in zip(ids, clips.column("keep").to_pylist())]
        return pa.table({"clip_id": ids, "keep": keep})


@dataclass(kw_only=True)
class Costly(Fails):
    """A stage after the barrier that skips the clips it dropped."""

    name: ClassVar[str] = "costly"
    skips_dropped: ClassVar[bool] = True
    on: str = "never"


def test_rows_waiting_for_a_barrier_are_counted_as_the_stores_count_them(inputs, tmp_path, monkeypatch):
    sim = _sim().stages
    pipeline = Pipeline(name="barrier", source="<test>", text="", stages=[*sim[:4], DropOdd(), Costly(), sim[4]])
    out = tmp_path / "out"
    _run(pipeline, inputs, out, on_error="raise")
    steps, loads = _check(pipeline, inputs, out, monkeypatch)
    assert loads == 0
    kept = sum(pa.compute.sum(t.column("keep").cast(pa.int64())).as_py() for t in [_filter_view(out)])
    assert 0 < steps[4]["maybe"] < VIDEOS * CLIPS_PER_VIDEO and steps[4]["maybe"] >= kept


def _filter_view(out: Path) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(out / "manifest" / "clips", columns=["keep"])

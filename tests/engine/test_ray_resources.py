"""What an embedded Ray on one machine is asked for: no more logical CPUs than cores, every actor pool can start
its first actor beside the tasks, and a splitter's clips are spread over several workers of the next stage
(Ray Data would otherwise hand all clips of a video, one block, to one worker)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import ClassVar

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from engine.executors.ray_executor import POOL_SHARE_OF_CORES, _placements
from engine.pipeline import Pipeline, load_pipeline
from engine.run import run_pipeline
from engine.stage import Resources, RunContext, Stage


@pytest.mark.parametrize("name", ["demo", "stiv"])
@pytest.mark.parametrize("cores,gpus", [(1, 0), (2, 0), (16, 1), (64, 8)])
def test_actor_pools_leave_the_tasks_and_the_repartition_room(name, cores, gpus):
    pipeline = load_pipeline(name, check_models=False)
    stages = pipeline.stages
    got = _placements(pipeline, float(cores), float(gpus), embedded=True)
    pool_cpus = sum(p.cpus * p.max_actors for p, s in zip(got, stages) if s.stateful)
    tasks = [p.cpus for p, s in zip(got, stages) if not s.stateful]
    assert tasks and any(s.stateful for s in stages)
    # every pool at its largest, plus the widest task, fit at once
    assert pool_cpus + max(tasks) <= cores + 1e-9
    assert all(0 < p.cpus <= s.resources.cpus for p, s in zip(got, stages))
    for p, s in zip(got, stages):
        if s.stateful and s.resources.gpus:  # a GPU pool: as many actors as its share allows on these GPUs
            assert p.max_actors == (s.workers or max(1, int(gpus // s.resources.gpus)))
        elif s.stateful:
            assert p.max_actors == (s.workers or 1)
        else:
            assert p.max_actors is None
    if pool_cpus > cores * POOL_SHARE_OF_CORES + 1e-9:  # not shrunk: then everything asked must fit
        assert [p.cpus for p in got] == [s.resources.cpus for s in stages]
    # re-blocked after the splitter and before a smaller batch, where a whole CPU stays free for Ray's repartition
    reblocked = [i for i, s in enumerate(stages[:-1]) if s.fan_out or stages[i + 1].batch_size < s.batch_size]
    split = [i for i, s in enumerate(stages) if s.fan_out]
    assert split and set(split) <= set(reblocked) and reblocked[0] < split[0]  # probe's batch is not split's
    for i, p in enumerate(got):
        assert p.rebatch == (stages[i + 1].batch_size if i in reblocked and cores - pool_cpus >= 1 else None)
    assert (got[split[0]].rebatch is not None) == (cores >= 2)


def test_a_cluster_gets_what_the_pipeline_file_asks():
    pipeline = load_pipeline("stiv", check_models=False)
    got = _placements(pipeline, 2.0, 1.0, embedded=False)
    assert [p.cpus for p in got] == [s.resources.cpus for s in pipeline.stages]
    assert [p.max_actors for p in got] == [(s.workers or None) if s.stateful else None for s in pipeline.stages]
    stages = pipeline.stages
    assert [p.rebatch for p in got] == [stages[i + 1].batch_size if i + 1 < len(stages) and
                                        (s.fan_out or stages[i + 1].batch_size < s.batch_size) else None
                                        for i, s in enumerate(stages)]


CLIPS = 12
NAP_S = 0.5  # per clip: a batch of two takes long enough that a second worker starts on the next one


@dataclass(kw_only=True)
class ManyClips(Stage):
    name: ClassVar[str] = "many_clips"
    fan_out: ClassVar[bool] = True
    adds: ClassVar[dict[str, pa.DataType]] = {"clip_id": pa.string(), "start_frame": pa.int64(),
                                              "end_frame": pa.int64()}

    def process_batch(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([{**r, "clip_id": f"{r['video_id']}-{k}", "start_frame": k, "end_frame": k + 1}
                                     for r in batch.to_pylist() for k in range(CLIPS)])


@dataclass(kw_only=True)
class SlowScore(Stage):
    name: ClassVar[str] = "slow_score"
    adds: ClassVar[dict[str, pa.DataType]] = {"scored": pa.bool_(), "cv2_threads": pa.int64()}
    batch_size: int = 2

    def process_batch(self, batch: pa.Table) -> pa.Table:
        import cv2

        time.sleep(NAP_S * batch.num_rows)
        return (batch.append_column("scored", pa.array([True] * batch.num_rows))
                .append_column("cv2_threads", pa.array([cv2.getNumThreads()] * batch.num_rows, pa.int64())))


def _model(label: str) -> type[Stage]:
    """A stage with a setup (an actor pool) asking half a CPU, as a model stage would."""

    def process_batch(self, batch: pa.Table) -> pa.Table:
        return batch.append_column(label, pa.array([1] * batch.num_rows, pa.int64()))

    cls = type(label, (Stage,), {"__annotations__": {"resources": Resources}, "name": label,
                                 "adds": {label: pa.int64()},
                                 "resources": field(default_factory=lambda: Resources(cpus=0.5)),
                                 "setup": lambda self, ctx: None, "process_batch": process_batch})
    cls.__annotations__.update({"name": ClassVar[str], "adds": ClassVar[dict]})
    return dataclass(kw_only=True)(cls)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_videos_clips_are_scored_by_several_workers(tmp_path):
    """One video, twelve clips, batches of two: the clips reach at least two score workers at once. Four actor
    pools of half a CPU each would have held the two CPUs whole, so Ray Data's repartition task (one CPU) never
    ran and the run hung: it must finish."""
    from engine.executors.ray_executor import RayExecutor

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "v.mp4").write_bytes(b"never decoded")
    stages = [ManyClips(), SlowScore(), *(_model(f"model_{k}")() for k in range(4))]
    pipeline = Pipeline(name="fan", source="<test>", stages=stages, text="")
    executor = RayExecutor(num_cpus=2, progress=False)
    try:
        run_pipeline(pipeline, str(tmp_path / "in"), str(tmp_path / "out"), executor, on_error="raise")
    finally:
        executor.shutdown()
    metrics = json.loads((tmp_path / "out" / "run.json").read_text())["metrics"]["stages"]
    score = metrics["slow_score"]
    assert (score["rows_in"], score["rows_out"], score["batches"]) == (CLIPS, CLIPS, CLIPS // 2)
    assert score["workers"] >= 2, score
    assert all(metrics[f"model_{k}"]["rows_out"] == CLIPS for k in range(4))
    # OpenCV in a worker is as wide as its CPU request (0.75 here: one thread), not one thread per core
    clips = pads.dataset(str(tmp_path / "out" / "manifest" / "clips"), format="parquet").to_table()
    assert clips.column("cv2_threads").to_pylist() == [1] * CLIPS


@dataclass(kw_only=True)
class LookAtVideos(Stage):
    name: ClassVar[str] = "look"
    adds: ClassVar[dict[str, pa.DataType]] = {"looked": pa.bool_()}
    batch_size: int = 4

    def process_batch(self, batch: pa.Table) -> pa.Table:
        return batch.append_column("looked", pa.array([True] * batch.num_rows))


@dataclass(kw_only=True)
class SlowSplit(ManyClips):
    batch_size: int = 1

    def process_batch(self, batch: pa.Table) -> pa.Table:
        time.sleep(4 * NAP_S * batch.num_rows)
        return super().process_batch(batch)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_videos_batched_before_the_splitter_are_split_by_several_workers(tmp_path):
    """A stage of batch 4 before a splitter of batch 1: Ray Data would fuse the two into one operator that takes
    four videos per task and splits them in turn. Re-blocked, the videos reach at least two split workers."""
    from engine.executors.ray_executor import RayExecutor

    (tmp_path / "in").mkdir()
    for k in range(4):
        (tmp_path / "in" / f"v{k}.mp4").write_bytes(bytes([k]) * 10)
    pipeline = Pipeline(name="split", source="<test>", stages=[LookAtVideos(), SlowSplit(), SlowScore()], text="")
    # four logical CPUs (the stages sleep): with two, Ray Data keeps one for the operator after the splitter
    # while that one waits for input, so the splitter runs one task at a time whatever its blocks
    executor = RayExecutor(num_cpus=4, progress=False)
    try:
        run_pipeline(pipeline, str(tmp_path / "in"), str(tmp_path / "out"), executor, on_error="raise")
    finally:
        executor.shutdown()
    split = json.loads((tmp_path / "out" / "run.json").read_text())["metrics"]["stages"]["many_clips"]
    assert (split["rows_in"], split["rows_out"], split["batches"]) == (4, 4 * CLIPS, 4)
    assert split["workers"] >= 2, split

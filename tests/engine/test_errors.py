"""Errors as data: structured error columns, input faults vs faults of the machine, honest summaries."""

from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.cli import main
from engine.manifest import Manifest
from engine.stage import (BASE_COLUMNS, ERROR, INPUT_FAULT, OK, UNEXPECTED, EnvironmentFault, RunContext, Stage,
                          StageError, conform, environment_fault, run_stage)


@dataclass(kw_only=True)
class _Doubler(Stage):
    """Fails the whole batch whenever one of its rows is bad, the way a batched model call does."""

    name: ClassVar[str] = "doubler"
    adds: ClassVar[dict[str, pa.DataType]] = {"doubled": pa.int64()}
    fault: str = "input"  # what a bad row raises: input | bug | memory | disk
    calls: int = 0

    def process_batch(self, batch: pa.Table) -> pa.Table:
        self.calls += 1
        if any("bad" in uri for uri in batch.column("uri").to_pylist()):
            raise {"input": StageError("cannot decode frame 3"), "bug": KeyError("width"), "memory": MemoryError(),
                   "disk": OSError(errno.ENOSPC, "No space left on device")}[self.fault]
        return batch.append_column("doubled", pa.array([2 * len(u) for u in batch.column("uri").to_pylist()]))


def _batch(uris: list[str]) -> pa.Table:
    rows = [{"uri": u, "video_id": f"v{i}", "bytes": 1, "status": OK} for i, u in enumerate(uris)]
    return conform(pa.Table.from_pylist(rows), BASE_COLUMNS)


def _run(stage: Stage, uris: list[str]) -> list[dict]:
    schema = {**BASE_COLUMNS, **stage.adds}
    out = run_stage(stage, _batch(uris), RunContext(output="/nonexistent-out"), schema)
    return sorted(out.to_pylist(), key=lambda r: r["uri"])


def test_one_bad_row_cannot_take_its_batch_down():
    stage = _Doubler()
    rows = _run(stage, ["a.mp4", "bad.mp4", "ccc.mp4"])
    assert [(r["uri"], r["status"], r["doubled"]) for r in rows] == [
        ("a.mp4", OK, 10), ("bad.mp4", ERROR, None), ("ccc.mp4", OK, 14)]
    bad = rows[1]
    assert (bad["error_stage"], bad["error_kind"], bad["error_cause"]) == ("doubler", INPUT_FAULT,
                                                                         "cannot decode frame 3")
    assert bad["error"] == "doubler: bad.mp4: cannot decode frame 3"  # made from the columns
    assert all(r["error_kind"] is None and r["error"] is None for r in rows if r["status"] == OK)


def test_an_unexpected_exception_is_recorded_as_unexpected_not_as_bad_input():
    rows = _run(_Doubler(fault="bug"), ["a.mp4", "bad.mp4"])
    bad = rows[1]
    assert (bad["status"], bad["error_kind"], bad["error_cause"]) == (ERROR, UNEXPECTED, "KeyError: 'width'")
    assert rows[0]["status"] == OK


@pytest.mark.parametrize("fault", ["memory", "disk"])
def test_faults_of_the_machine_stop_the_work_unit_instead_of_becoming_error_rows(fault):
    with pytest.raises(EnvironmentFault) as raised:
        _run(_Doubler(fault=fault), ["a.mp4", "bad.mp4"])
    assert raised.value.stage == "doubler"
    assert ("MemoryError" if fault == "memory" else "No space left") in raised.value.cause


def test_environment_faults_are_found_behind_a_stage_error(tmp_path):
    try:
        try:
            raise OSError(errno.EROFS, "Read-only file system", "/somewhere/tmp.mp4")
        except OSError as exc:
            raise StageError(str(exc)) from None  # how stages wrap I/O errors: the context is still there
    except StageError as wrapped:
        assert environment_fault(wrapped) is not None
    out = tmp_path / "out"
    from engine.stage import register_output

    register_output(str(out))
    # any OS error on the run's own output is the output's fault; on an input file it is the input's
    assert environment_fault(PermissionError(errno.EACCES, "Permission denied", str(out / "clips" / "x.mp4")))
    assert environment_fault(PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "in.mp4"))) is None
    assert environment_fault(FileNotFoundError(errno.ENOENT, "No such file", str(tmp_path / "in.mp4"))) is None


def test_unwritable_clips_folder_fails_the_run_and_a_rerun_after_the_fix_finishes_it(tmp_path, demo_videos):
    folder, truths = demo_videos
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert main(["run", "cpu", "--input", str(folder), "--output", str(reference), "--no-progress"]) == 0
    # Every clip write fails after the up-front checks (a folder sits at each clip's name): the output's fault.
    for name in (reference / "clips").iterdir():
        (out / "clips" / name.name / "in-the-way").mkdir(parents=True)
    assert main(["run", "cpu", "--input", str(folder), "--output", str(out), "--no-progress"]) == 3
    assert not (out / "run.json").exists()
    if (out / "manifest" / "clips").exists():  # nothing may claim the clips were made
        assert pq.read_table(out / "manifest" / "clips").num_rows == 0
    shutil.rmtree(out / "clips")
    assert main(["run", "cpu", "--input", str(folder), "--output", str(out), "--no-progress"]) == 0
    got, want = pq.read_table(out / "manifest" / "clips"), pq.read_table(reference / "manifest" / "clips")
    assert got.num_rows == want.num_rows > 0
    assert set(got.column("status").to_pylist()) == {OK}
    assert sorted(p.name for p in (out / "clips").iterdir()) == sorted(p.name for p in (reference / "clips").iterdir())
    summary = Manifest(str(out)).read_json("run.json")["summary"]
    assert summary["videos_error"] == 0 and summary["clips_error"] == 0 and summary["videos_ok"] == len(truths)


def test_stage_seconds_count_a_video_stage_once_per_video_not_once_per_clip(tmp_path):
    rows = []
    for v in ("a", "b"):
        for k in range(3):  # the splitter copied the video's probe time onto each of its 3 clips
            rows.append({"uri": v, "video_id": v, "status": OK, "clip_id": f"{v}-{k}", "start_frame": k,
                         "clips_in_video": 3,
                         "_sec_probe": 1.0, "_sec_split": 0.5})
    manifest = Manifest(str(tmp_path / "out"))
    table = pa.Table.from_pylist(rows)
    schema = {**BASE_COLUMNS, "clip_id": pa.string(), "start_frame": pa.int32(), "clips_in_video": pa.int32()}
    _, clips, seconds, _ = manifest.compact(table, schema, ["uri", "video_id", "bytes", "status", "error"], ("probe",))
    assert clips.num_rows == 6
    assert seconds == {"probe": pytest.approx(2.0), "split": pytest.approx(3.0)}


def test_error_counts_read_the_columns_of_videos_and_clips():
    from engine.manifest import error_counts
    from engine.stage import error_rows

    videos = error_rows(_batch(["x: y.mp4", "z.mp4"]), "probe", "no video stream")  # ": " in a name is harmless
    clips = _batch(["a.mp4", "b.mp4", "c.mp4"]).append_column("clip_id", pa.array(["a-1", "b-1", "c-1"]))
    clips = pa.concat_tables([error_rows(clips.slice(0, 2), "score", "decoding failed (frame 3)"),
                              error_rows(clips.slice(2, 1), "caption", "KeyError: 'x'", UNEXPECTED)])
    assert clips.column("error").to_pylist()[0] == "score: a.mp4: clip a-1: decoding failed (frame 3)"
    assert error_counts([videos, clips]) == {"probe: no video stream": 2, "score: decoding failed": 2,
                                             "caption: KeyError: 'x'": 1}
    assert error_counts([videos, clips], "kind") == {INPUT_FAULT: 4, UNEXPECTED: 1}


@dataclass(kw_only=True)
class _Recorder(Stage):
    """Writes a file per worker on setup and on teardown, so a test can see both happened."""

    name: ClassVar[str] = "recorder"
    folder: str = ""

    def setup(self, ctx: RunContext) -> None:
        import os

        self.mark = Path(self.folder) / f"{os.getpid()}-{id(self)}"
        self.mark.with_suffix(".setup").write_text("")

    def process_batch(self, batch: pa.Table) -> pa.Table:
        return batch

    def teardown(self) -> None:
        self.mark.with_suffix(".teardown").write_text("")


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_both_executors_tear_down_every_stage_they_set_up(executor, tmp_path, demo_videos):
    from engine.executors.local import LocalExecutor
    from engine.pipeline import Pipeline
    from engine.probe import Probe
    from engine.run import run_pipeline

    folder, _ = demo_videos
    marks = tmp_path / "marks"
    marks.mkdir()
    from engine.scenes import SceneSplit

    pipeline = Pipeline(name="t", source="<test>", stages=[Probe(), SceneSplit(), _Recorder(folder=str(marks))],
                        text="")
    if executor == "ray":
        from engine.executors.ray_executor import RayExecutor

        runner = RayExecutor(progress=False)
    else:
        runner = LocalExecutor(progress=False)
    try:
        run_pipeline(pipeline, str(folder), str(tmp_path / "out"), runner, on_error="raise")
    finally:
        if executor == "ray":
            runner.shutdown()
    setups = sorted(p.stem for p in marks.glob("*.setup"))
    assert setups and setups == sorted(p.stem for p in marks.glob("*.teardown"))

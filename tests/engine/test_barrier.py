"""Barrier stages: the stages after one see its decisions, and a rerun whose barrier decides otherwise ends
with the manifest of a fresh run that decided so from the start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.clips import WriteClips
from engine.executors.local import LocalExecutor
from engine.pipeline import Pipeline
from engine.probe import Probe
from engine.run import run_pipeline
from engine.synthetic import Scene, Transition, make_video
from engine.scenes import SceneSplit
from engine.stage import RunContext, Stage


@dataclass(kw_only=True)
class DropByPosition(Stage):
    """A barrier that drops the clips at the given positions of the sorted clip ids."""

    name: ClassVar[str] = "drop_by_position"
    adds: ClassVar[dict[str, pa.DataType]] = {"keep": pa.bool_(), "drop_reason": pa.string()}
    barrier: ClassVar[bool] = True
    drop: tuple[int, ...] = ()

    def process_batch(self, batch: pa.Table) -> pa.Table:
        return batch

    def finalize(self, ctx: RunContext, clips: pa.Table) -> pa.Table:
        ids = sorted(clips.column("clip_id").to_pylist())
        dropped = {ids[i] for i in self.drop}
        return pa.table({"clip_id": ids, "keep": [c not in dropped for c in ids],
                         "drop_reason": [f"position {ids.index(c)}" if c in dropped else None for c in ids]})


def _pipeline(drop: tuple[int, ...]) -> Pipeline:
    stages = [Probe(), SceneSplit(min_clip_s=1.0), DropByPosition(drop=drop), WriteClips(max_side=64)]
    return Pipeline(name="barrier", source="<test>", stages=stages, text="")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("barrier_in")
    for k in range(3):
        make_video(folder / f"v{k}.mp4", [Scene(frames=30, seed=50 + 2 * k), Scene(frames=30, seed=51 + 2 * k)],
                   [Transition(kind="cut")], width=160, height=90)
    return folder


def _view(out: Path) -> list[dict]:
    table = pq.read_table(out / "manifest" / "clips")
    return [{"clip_id": r["clip_id"], "keep": r["keep"], "drop_reason": r["drop_reason"],
             "written": r["clip_uri"] is not None} for r in table.to_pylist()]


def _run(videos: Path, out: Path, drop: tuple[int, ...]) -> None:
    run_pipeline(_pipeline(drop), str(videos), str(out), LocalExecutor(videos_per_part=1, progress=False),
                 on_error="raise")


def test_stages_after_a_barrier_see_its_decision(videos, tmp_path) -> None:
    _run(videos, tmp_path / "out", (0, 3))
    view = _view(tmp_path / "out")
    assert len(view) == 6
    assert [r["written"] for r in sorted(view, key=lambda r: r["clip_id"])] == [False, True, True, False, True, True]


@pytest.mark.parametrize("first, second", [((0, 3), (1,)), ((1,), (0, 3)), ((), (2, 5))])
def test_a_rerun_whose_barrier_decides_otherwise_equals_a_fresh_run(videos, tmp_path, first, second) -> None:
    _run(videos, tmp_path / "rerun", first)
    _run(videos, tmp_path / "rerun", second)
    _run(videos, tmp_path / "fresh", second)
    assert _view(tmp_path / "rerun") == _view(tmp_path / "fresh")

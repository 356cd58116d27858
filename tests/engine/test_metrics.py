"""Per-stage run metrics against a pipeline whose numbers are known: stages that sleep a set time per row on a
known number of rows, one of them reporting a known number of generated tokens. Bounds are generous (the
machine is shared) but derived from the sleeps, so a metric that counts the wrong thing fails."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.executors.local import LocalExecutor
from engine.metrics import RunMeter, Span, metered, stamp
from engine.pipeline import Pipeline
from engine.run import run_pipeline
from engine.stage import Resources, RunContext, Stage, with_tokens

N_VIDEOS = 12
NAP_S, DOZE_S = 0.03, 0.02  # seconds per row of the two stages


@dataclass(kw_only=True)
class Nap(Stage):
    """Sleeps ``per_row_s`` per row and marks the row."""

    name: ClassVar[str] = "nap"
    adds: ClassVar[dict[str, pa.DataType]] = {"napped": pa.bool_()}
    per_row_s: float = NAP_S
    batch_size: int = 4

    def process_batch(self, batch: pa.Table) -> pa.Table:
        time.sleep(self.per_row_s * batch.num_rows)
        return batch.append_column("napped", pa.array([True] * batch.num_rows))


@dataclass(kw_only=True)
class Halve(Stage):
    """The splitter: two clips per video, and nothing to wait for."""

    name: ClassVar[str] = "halve"
    fan_out: ClassVar[bool] = True
    adds: ClassVar[dict[str, pa.DataType]] = {"clip_id": pa.string(), "start_frame": pa.int64(),
                                              "end_frame": pa.int64()}

    def process_batch(self, batch: pa.Table) -> pa.Table:
        rows = [{**r, "clip_id": f"{r['video_id']}-{k}", "start_frame": 10 * k, "end_frame": 10 * k + 9}
                for r in batch.to_pylist() for k in range(2)]
        return pa.Table.from_pylist(rows)


@dataclass(kw_only=True)
class Talk(Stage):
    """Sleeps per row and "generates" as many tokens as the clip's video has bytes. Under Ray it is an actor
    pool (it has a setup) asking for other resources than the stages before it, so Ray Data does not fuse it
    with them: an operator of its own, with a queue of its own."""

    name: ClassVar[str] = "talk"
    adds: ClassVar[dict[str, pa.DataType]] = {"said": pa.int64()}
    generates_tokens: ClassVar[bool] = True
    per_row_s: float = DOZE_S
    batch_size: int = 3
    resources: Resources = field(default_factory=lambda: Resources(cpus=0.5))

    def setup(self, ctx: RunContext) -> None:
        pass

    def process_batch(self, batch: pa.Table) -> pa.Table:
        time.sleep(self.per_row_s * batch.num_rows)
        sizes = batch.column("bytes").to_pylist()
        return with_tokens(batch.append_column("said", pa.array(sizes, pa.int64())), self.name, sizes)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, int]:
    """Files the stages never decode; their sizes (known) are the tokens Talk reports."""
    folder = tmp_path_factory.mktemp("metrics_in")
    for k in range(N_VIDEOS):
        (folder / f"v{k:02d}.mp4").write_bytes(bytes([k]) * (100 + k))
    return folder, 2 * sum(100 + k for k in range(N_VIDEOS))  # two clips per video


def _pipeline() -> Pipeline:
    return Pipeline(name="metrics", source="<test>", stages=[Nap(), Halve(), Talk()], text="")


def _run(inputs: Path, out: Path, executor) -> dict:
    run_pipeline(_pipeline(), str(inputs), str(out), executor, on_error="raise")
    return json.loads((out / "run.json").read_text())["metrics"]


def test_local_metrics_match_the_sleeps(inputs, tmp_path):
    folder, tokens = inputs
    metrics = _run(folder, tmp_path / "out", LocalExecutor(videos_per_part=8, progress=False))
    stages = metrics["stages"]
    nap, halve, talk = stages["nap"], stages["halve"], stages["talk"]
    assert list(stages) == ["nap", "halve", "talk"]
    # parts of 8 and 4 videos; batches of 4 (nap), 8 (halve) and 3 (talk) rows; two clips per video
    assert [(st["rows_in"], st["rows_out"], st["batches"]) for st in (nap, halve, talk)] == \
        [(N_VIDEOS, N_VIDEOS, 2 + 1), (N_VIDEOS, 2 * N_VIDEOS, 1 + 1), (2 * N_VIDEOS, 2 * N_VIDEOS, 6 + 3)]
    for st, busy in ((nap, N_VIDEOS * NAP_S), (talk, 2 * N_VIDEOS * DOZE_S)):
        assert busy <= st["busy_s"] < busy * 1.5 + 0.5
    for st in stages.values():
        assert st["workers"] == 1 and st["queue_unit"] == "rows"
        assert st["busy_s"] <= st["wall_s"] <= metrics["wall_s"]
        assert st["rows_per_s"] == pytest.approx(st["rows_out"] / st["wall_s"], rel=1e-3)
        # busy_fraction comes from the unrounded times; busy_s and wall_s are rounded to 4 places, so the
        # fraction lies between what their rounding bounds allow, give or take its own rounding
        half = 5e-5
        low = (st["busy_s"] - half) / (st["wall_s"] + half) - half
        high = (st["busy_s"] + half) / (st["wall_s"] - half) + half
        assert low <= st["busy_fraction"] <= high
        assert st["wait_s"] == pytest.approx(st["wall_s"] - st["busy_s"], abs=1e-3)  # one worker
    # nap waits while talk does the first part's 16 clips: the only long gap between nap's calls
    assert 16 * DOZE_S <= nap["wait_s"] < 16 * DOZE_S * 1.5 + 0.5
    assert talk["wait_s"] >= 4 * NAP_S  # talk waits for nap's second part
    # rows queued at the input when the stage takes a batch: nap 8, 4 | 4; talk 16, 13, ..., 1 | 8, 5, 2
    assert (nap["queue_depth_mean"], nap["queue_depth_max"]) == (pytest.approx(16 / 3, abs=1e-3), 8)
    assert (talk["queue_depth_mean"], talk["queue_depth_max"]) == (pytest.approx(66 / 9, abs=1e-3), 16)
    assert "tokens_per_s" not in nap and "tokens_per_s" not in halve and talk["tokens"] == tokens
    assert "finalize_s" not in nap  # only stages with a driver-side step have one
    assert talk["tokens_per_s"] == pytest.approx(tokens / talk["wall_s"], rel=1e-2)
    # the bookkeeping never reaches the manifests
    for name in ("videos", "clips"):
        assert not [c for c in pq.read_schema(next((tmp_path / "out" / "manifest" / name).glob("*.parquet"))).names
                    if c.startswith("_")]


def test_a_rerun_counts_only_its_own_work(inputs, tmp_path):
    folder, _ = inputs
    executor = LocalExecutor(progress=False)
    _run(folder, tmp_path / "out", executor)
    again = _run(folder, tmp_path / "out", executor)  # everything stored: nothing reaches a stage
    assert list(again["stages"]) == ["nap", "halve", "talk"]
    assert all(st["rows_in"] == 0 and st["busy_s"] == 0 and st["busy_fraction"] is None
               for st in again["stages"].values()), again


def test_spans_stamped_on_rows_count_once_per_batch():
    """Under Ray the spans travel on the rows, and a batch can reach the driver in pieces, mixed with others."""
    meter = RunMeter()
    a = Span(stage="s", batch="w:1", worker="w", start=10.0, end=11.0, busy=1.0, rows_in=4, rows_out=6, tokens=5)
    b = Span(stage="s", batch="w:2", worker="w", start=12.0, end=12.5, busy=0.5, rows_in=2, rows_out=2, tokens=1)
    rows = stamp(pa.table({"x": list(range(6))}), a)
    mixed = pa.concat_tables([rows.slice(0, 2), stamp(pa.table({"x": [7, 8]}), b)])
    assert meter.take_spans(mixed).column_names == ["x"]
    assert meter.take_spans(rows.slice(2)).column_names == ["x"]
    st = meter.summary(5.0, lambda name: True)["stages"]["s"]
    assert (st["rows_in"], st["rows_out"], st["batches"], st["tokens"]) == (6, 8, 2, 6)
    assert (st["busy_s"], st["wall_s"], st["wait_s"], st["busy_fraction"]) == (1.5, 2.5, 1.0, 0.6)


def test_a_stage_used_twice_keeps_both_spans():
    ctx = RunContext(output="/tmp/unused")
    schema = _pipeline().schema_after(0)
    table = pa.table({"uri": ["a"], "video_id": ["a"], "bytes": [1], "status": ["ok"], "error": [None]},)
    once = stamp(*metered(Nap(per_row_s=0), table, ctx, schema))
    twice = stamp(*metered(Nap(per_row_s=0), once.drop_columns(["napped"]), ctx, schema))
    meter = RunMeter()
    meter.take_spans(twice)
    assert meter.summary(1.0)["stages"]["nap"]["batches"] == 2


@pytest.mark.slow
def test_ray_metrics_match_the_sleeps(inputs, tmp_path):
    from engine.executors.ray_executor import RayExecutor

    folder, tokens = inputs
    executor = RayExecutor(num_cpus=2, progress=False)
    try:
        metrics = _run(folder, tmp_path / "out", executor)
    finally:
        executor.shutdown()
    assert list(metrics["stages"]) == ["nap", "halve", "talk"]
    for name, rows_in, rows_out, per_row in (("nap", 12, 12, NAP_S), ("halve", 12, 24, 0), ("talk", 24, 24, DOZE_S)):
        st = metrics["stages"][name]
        assert (st["rows_in"], st["rows_out"]) == (rows_in, rows_out)
        assert 1 <= st["workers"] <= 2
        assert rows_in * per_row <= st["busy_s"] < rows_in * per_row * 1.5 + 1.0
        assert 0 < st["busy_fraction"] <= 1 and st["busy_s"] / st["workers"] <= st["wall_s"] + 1e-3
        assert st["rows_per_s"] == pytest.approx(rows_out / st["wall_s"], rel=1e-3)
    assert metrics["stages"]["talk"]["tokens"] == tokens
    # blocks waiting at each operator: the input's at the first (nap and halve are fused into one operator of
    # tasks), nap's output at talk's actor pool
    nap, halve, talk = (metrics["stages"][name] for name in ("nap", "halve", "talk"))
    assert nap["queue_unit"] == talk["queue_unit"] == "blocks" and nap["queue_depth_max"] >= 1
    assert halve["queue_depth_mean"] is None and talk["queue_depth_mean"] is not None


def test_inspect_prints_the_metrics_of_the_run(inputs, tmp_path, capsys, monkeypatch):
    from engine import cli

    folder, _ = inputs
    out = tmp_path / "out"
    metrics = _run(folder, out, LocalExecutor(progress=False))
    capsys.readouterr()
    assert cli.main(["inspect", str(out)]) == 0
    text = capsys.readouterr().err
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
             for line in text.splitlines() if line.count("│") == 10}
    for name, m in metrics["stages"].items():
        assert lines[name] == [f"{m['rows_in']:,}", f"{m['rows_out']:,}", "1", f"{m['rows_per_s']:,.1f}",
                               f"{100 * m['busy_fraction']:.0f}%", f"{m['wait_s']:,.2f}",
                               f"{m['queue_depth_mean']:,.1f}/{m['queue_depth_max']:,}",
                               f"{m['tokens_per_s']:,.1f}" if name == "talk" else ""], (name, text)
    assert "mean/max rows waiting at its input" in " ".join(text.split())


class _FakeDevices:
    """Two GPUs whose readings follow a script (NvmlSource's interface); the last reading repeats."""

    def __init__(self, script: list[list[tuple[float, float]]]):
        self.script, self.closed = list(script), False

    def read(self) -> list[tuple[float, float]]:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def close(self) -> None:
        self.closed = True


def test_gpu_sampler_summarises_its_readings():
    from engine.gpu import GpuSampler

    devices = _FakeDevices([[(50.0, 1000.0), (70.0, 3000.0)], [(100.0, 2000.0), (100.0, 6000.0)]])
    sampler = GpuSampler(lambda: devices, interval_s=0.01)
    assert sampler.start()
    time.sleep(0.1)
    gpu = sampler.stop()
    n = len(gpu["samples"])
    assert n >= 2 and devices.closed and gpu["devices"] == 2
    assert gpu["samples"][0][1:] == [60.0, 4000.0] and all(s[1:] == [100.0, 8000.0] for s in gpu["samples"][1:])
    assert gpu["sm_util_mean"] == pytest.approx((60 + 100 * (n - 1)) / n, abs=0.01) and gpu["mem_peak_mb"] == 8000.0
    assert [s[0] for s in gpu["samples"]] == sorted(s[0] for s in gpu["samples"])


def test_no_gpu_no_gpu_metrics(inputs, tmp_path):
    """This machine has no GPU: NVML (or its package) is missing, sampling does not start, run.json says nothing."""
    from engine.gpu import GpuSampler

    assert GpuSampler().start() is False
    folder, _ = inputs
    assert "gpu" not in _run(folder, tmp_path / "out", LocalExecutor(progress=False))

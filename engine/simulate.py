"""A run at any scale without video: virtual input files and stages that make synthetic metadata.

``bench/bench_scale.py`` and the scale tests drive the real engine (listing, ingest, plan, executors, result
store, manifests, finalize) with these stages in place of decoding: ``sim_probe`` gives each video fixed-size
metadata, ``sim_split`` cuts it into ``clips_per_video`` clips, ``sim_score`` scores each clip, ``sim_filter``
keeps clips above a threshold and ``sim_shard`` assigns kept clips to shards in its finalize (the shard
index's metadata part). Every value derives from the ids, so two runs give the same bytes.

Inputs are ``vsim://`` URIs (a registered fsspec protocol): a file's bytes are its own path, so each has its
own content id and nothing is stored anywhere.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import ClassVar

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from fsspec.spec import AbstractFileSystem

from engine.io import join, output_fs, write_atomic
from engine.pipeline import Pipeline
from engine.stage import OK, RunContext, Stage

PROTOCOL = "vsim"


class VirtualFileSystem(AbstractFileSystem):
    """Read-only files that exist by name: ``vsim://any/path.mp4`` holds the bytes of its path."""

    protocol = PROTOCOL

    def info(self, path: str, **kwargs) -> dict:
        path = self._strip_protocol(path)
        return {"name": path, "size": len(path.encode()), "type": "file", "mtime": 1}

    def _open(self, path: str, mode: str = "rb", **kwargs) -> io.BytesIO:
        return io.BytesIO(self._strip_protocol(path).encode())


fsspec.register_implementation(PROTOCOL, VirtualFileSystem, clobber=True)


def write_input_list(path: str, videos: int) -> str:
    """A .txt list of ``videos`` virtual input URIs."""
    with open(path, "w") as handle:
        for start in range(0, videos, 100_000):
            handle.write("".join(f"{PROTOCOL}://in/{i:09d}.mp4\n" for i in range(start, min(videos, start + 100_000))))
    return path


def _unit(values: pa.Array | pa.ChunkedArray, salt: int) -> np.ndarray:
    """A number in [0, 1) per non-empty string, fixed by its bytes (a polynomial hash over the Arrow buffers,
    never Python's per-process one)."""
    array = pa.concat_arrays(values.chunks) if isinstance(values, pa.ChunkedArray) else values
    array = array.cast(pa.string())
    offsets = np.frombuffer(array.buffers()[1], np.int32)[array.offset:array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], np.uint8)[offsets[0]:offsets[-1]].astype(np.uint64)
    starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
    position = np.arange(len(data)) - np.repeat(starts, lengths)
    powers = np.cumprod(np.full(int(lengths.max(initial=1)), 0x100000001B3, np.uint64)) ^ np.uint64(salt)
    with np.errstate(over="ignore"):
        code = np.add.reduceat(data * powers[position], starts) if len(data) else np.zeros(0, np.uint64)
        code ^= code >> np.uint64(29)
        code *= np.uint64(0xBF58476D1CE4E5B9)
        code ^= code >> np.uint64(32)
    return (code >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass(kw_only=True)
class SimProbe(Stage):
    """Video metadata from the video id: 30 fps, 640x360, 10 s per clip to come."""

    name: ClassVar[str] = "sim_probe"
    reads: ClassVar[tuple[str, ...]] = ("video_id",)
    adds: ClassVar[dict[str, pa.DataType]] = {"fps": pa.float64(), "frames": pa.int64(), "width": pa.int32(),
                                              "height": pa.int32()}
    batch_size: int = 256
    clips_per_video: int = 20

    def process_batch(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        return (batch.append_column("fps", pa.array(np.full(n, 30.0)))
                .append_column("frames", pa.array(np.full(n, 300 * self.clips_per_video, np.int64)))
                .append_column("width", pa.array(np.full(n, 640, np.int32)))
                .append_column("height", pa.array(np.full(n, 360, np.int32))))


@dataclass(kw_only=True)
class SimSplit(Stage):
    """Every video into ``clips_per_video`` clips of 300 frames (the splitter: one row per clip)."""

    name: ClassVar[str] = "sim_split"
    reads: ClassVar[tuple[str, ...]] = ("frames", "fps")
    adds: ClassVar[dict[str, pa.DataType]] = {"clip_id": pa.string(), "start_frame": pa.int64(),
                                              "end_frame": pa.int64(), "start_s": pa.float64(), "end_s": pa.float64()}
    fan_out: ClassVar[bool] = True
    batch_size: int = 64
    clips_per_video: int = 20

    def process_batch(self, batch: pa.Table) -> pa.Table:
        k = self.clips_per_video
        repeat = np.repeat(np.arange(batch.num_rows), k)
        rows = batch.take(pa.array(repeat))
        start = np.tile(np.arange(k, dtype=np.int64) * 300, batch.num_rows)
        end = start + 299
        vid = rows.column("video_id")
        clip_id = pc.binary_join_element_wise(vid, pa.array([f"{s:07d}" for s in start]),
                                              pa.array([f"{e:07d}" for e in end]), "-")
        return (rows.append_column("clip_id", clip_id).append_column("start_frame", pa.array(start))
                .append_column("end_frame", pa.array(end)).append_column("start_s", pa.array(start / 30.0))
                .append_column("end_s", pa.array((end + 1) / 30.0)))


@dataclass(kw_only=True)
class SimScore(Stage):
    """A motion-like score in [0, 1) per clip, fixed by its clip id."""

    name: ClassVar[str] = "sim_score"
    reads: ClassVar[tuple[str, ...]] = ("clip_id",)
    adds: ClassVar[dict[str, pa.DataType]] = {"motion_mean": pa.float64(), "aesthetic_score": pa.float64()}
    batch_size: int = 1024

    def process_batch(self, batch: pa.Table) -> pa.Table:
        ids = batch.column("clip_id")
        return (batch.append_column("motion_mean", pa.array(_unit(ids, 1)))
                .append_column("aesthetic_score", pa.array(_unit(ids, 2) * 10)))


@dataclass(kw_only=True)
class SimFilter(Stage):
    """Keeps clips whose motion reaches ``min_motion``; says why it dropped the others."""

    name: ClassVar[str] = "sim_filter"
    reads: ClassVar[tuple[str, ...]] = ("motion_mean",)
    adds: ClassVar[dict[str, pa.DataType]] = {"keep": pa.bool_(), "drop_reason": pa.string()}
    batch_size: int = 4096
    min_motion: float = 0.2

    def process_batch(self, batch: pa.Table) -> pa.Table:
        keep = pc.greater_equal(batch.column("motion_mean"), self.min_motion)
        reason = pc.if_else(keep, pa.scalar(None, pa.string()), pa.scalar(f"motion_mean < {self.min_motion}"))
        return batch.append_column("keep", keep).append_column("drop_reason", reason)


@dataclass(kw_only=True)
class SimShard(Stage):
    """Assigns kept clips to shards of ``samples_per_shard`` in clip order and writes the shard index
    (``shards/index.json``: counts per shard, no tar payload)."""

    name: ClassVar[str] = "sim_shard"
    reads: ClassVar[tuple[str, ...]] = ("clip_id", "keep")
    adds: ClassVar[dict[str, pa.DataType]] = {"shard": pa.string()}
    batch_size: int = 1024
    samples_per_shard: int = 1000

    def process_batch(self, batch: pa.Table) -> pa.Table:
        return batch

    def finalize(self, ctx: RunContext, clips: pa.Table) -> pa.Table | None:
        ok = pc.and_(pc.equal(clips.column("status"), OK), pc.fill_null(clips.column("keep"), False))
        packed = clips.filter(ok).select(["clip_id"]).sort_by("clip_id")
        number = np.arange(packed.num_rows) // self.samples_per_shard
        names = pc.binary_join_element_wise(pa.scalar("sim/"), pa.array([f"{n:06d}" for n in range(
            int(number[-1]) + 1 if packed.num_rows else 0)]).take(pa.array(number)), ".tar", "") \
            if packed.num_rows else pa.array([], pa.string())
        counts = np.bincount(number) if packed.num_rows else np.array([], np.int64)
        fs, root = output_fs(ctx.output)
        index = {"shards": [{"path": f"sim/{n:06d}.tar", "count": int(c)} for n, c in enumerate(counts)],
                 "count": int(packed.num_rows)}
        write_atomic(fs, join(root, "shards", "index.json"), json.dumps(index, sort_keys=True).encode())
        return packed.append_column("shard", names)


STAGES = (SimProbe, SimSplit, SimScore, SimFilter, SimShard)


def pipeline(clips_per_video: int = 20, min_motion: float = 0.2) -> Pipeline:
    """The simulated curation pipeline: probe, split, score, filter, shard."""
    stages = [SimProbe(clips_per_video=clips_per_video), SimSplit(clips_per_video=clips_per_video), SimScore(),
              SimFilter(min_motion=min_motion), SimShard()]
    text = f"# simulated: clips_per_video={clips_per_video} min_motion={min_motion}\n"
    return Pipeline(name="simulated", source="<engine.simulate>", stages=stages, text=text)

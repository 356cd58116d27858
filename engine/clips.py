"""Clip files: each clip row written as ``<out>/clips/<clip_id>.mp4``.

Frames ``[start_frame, end_frame)`` are the frames ``engine.video`` numbers so (a full sequential decode's).
Each file is made by the first step of a chain that works, recorded in ``clip_written_by``:
``copy`` (a stream copy, only when exact: the clip starts on a keyframe of a stream without frame reordering
whose timestamps name its frames), ``encode`` (a libx264 re-encode of exactly the clip's frames with their
own timing, VFR kept, timestamps checked to increase), ``encode-cfr`` (a re-encode with constant-rate
timestamps regenerated from presentation order, for sources whose timestamps cannot be used, such as AVI with
packed B-frames). A clip no step can write becomes an error row that says why each step failed. Files are
written to a temporary name and renamed, so no reader sees half a file; a resumed run skips the clips whose
results the stage stored and writes the others again.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Literal

import av
import pyarrow as pa
from av.video.frame import PictureType

from engine.io import join, local_copy, output_fs, write_atomic
from engine.stage import RunContext, Stage, StageError, map_rows
from engine.video import PyAVReader, SpanRestart, VideoError

log = logging.getLogger(__name__)
# One x264 thread per clip (clips are encoded in parallel instead), and no macroblock-tree rate control:
# with mbtree on, the same frames gave different quantisers from run to run when encoders ran side by side
# (24 encodes of one clip, 4 at a time: 2 different outputs; with mbtree off: 1), which decoded up to 25
# grey levels apart. The frames fed to the encoder were byte-identical each time.
ENCODER_THREADS = 1
X264_PARAMS = "mbtree=0"


@dataclass(kw_only=True)
class WriteClips(Stage):
    """Write every kept clip as an H.264 mp4 under ``<out>/clips/``."""

    name: ClassVar[str] = "write_clips"
    reads: ClassVar[tuple[str, ...]] = ("uri", "clip_id", "start_frame", "end_frame")
    adds: ClassVar[dict[str, pa.DataType]] = {"clip_uri": pa.string(), "clip_bytes": pa.int64(),
                                              "clip_written_by": pa.string()}
    skips_dropped: ClassVar[bool] = True

    mode: Literal["auto", "encode", "copy"] = "auto"  # auto: copy when exact, else encode
    crf: int = 18  # x264 quality (lower is better); 18 is visually lossless for most footage
    preset: str = "veryfast"  # x264 speed/size trade-off
    max_side: int = 0  # downscale so the longer side is at most this (0 = keep the size)
    threads: int = 2  # clips encoded at once (each on one x264 thread; see ENCODER_THREADS)
    batch_size: int = 4

    def setup(self, ctx: RunContext) -> None:
        self.fs, self.root = output_fs(ctx.output)
        self.out_uri = ctx.output.rstrip("/")

    def check(self) -> list[str]:
        problems = [] if 0 <= self.crf <= 51 else [f"'crf' must be within 0..51, got {self.crf}"]
        return problems + ([] if self.threads >= 1 else [f"'threads' must be >= 1, got {self.threads}"])

    def process_batch(self, batch: pa.Table) -> pa.Table:
        return map_rows(batch, self.name, self._write, threads=self.threads)

    def _write(self, row: dict) -> dict:
        if row.get("clip_id") is None:
            return row
        target = join(self.root, "clips", f"{row['clip_id']}.mp4")
        uri = join(self.out_uri, "clips", f"{row['clip_id']}.mp4")
        # A file already there is written again: only the stage's stored result (engine.results) says which
        # settings made a file, and the row must not depend on whether an earlier run got this far.
        try:
            with local_copy(row["uri"]) as path:
                data, how = cut_clip(path, row["start_frame"], row["end_frame"], self.mode, self.crf,
                                     self.preset, self.max_side)
        except (VideoError, av.error.FFmpegError) as exc:
            raise StageError(f"clip file not written ({exc})") from None
        write_atomic(self.fs, target, data)
        return {**row, "clip_uri": uri, "clip_bytes": len(data), "clip_written_by": how}


def cut_clip(path: str, start: int, end: int, mode: str = "auto", crf: int = 18, preset: str = "veryfast",
             max_side: int = 0) -> tuple[bytes, str]:
    """Frames ``[start, end)`` of ``path`` as mp4 bytes, and the step that wrote them: copy, encode or
    encode-cfr (see the module docstring)."""
    reader = PyAVReader(path)
    try:
        if end > reader.num_frames or start >= end:
            raise VideoError(f"frames [{start}, {end}) are outside the stream's {reader.num_frames} frames")
        exact_copy = (reader.by_timestamp and not reader.reorders and not max_side
                      and reader.pts[start] in set(reader.keyframes))
        if mode == "copy" and not exact_copy:
            raise VideoError(f"frame {start} does not start a stream copy that decodes to exactly the clip's frames "
                             "(not a keyframe, or the stream reorders frames; use mode: encode)")
        steps = ["copy"] if exact_copy and mode != "encode" else []
        steps += [] if mode == "copy" else ["encode", "encode-cfr"]
        failures = []
        for step in steps:
            if step == "encode" and not reader.by_timestamp:
                continue  # the source's timestamps cannot be used: regenerate them
            try:
                if step == "copy":
                    return _copy(path, reader.pts[start], reader.pts[end - 1], end - start), step
                return _encode(reader, start, end, crf, preset, max_side, constant_rate=step == "encode-cfr"), step
            except (av.error.FFmpegError, ValueError, SpanRestart) as exc:
                failures.append(f"{step}: {type(exc).__name__}: {exc}")
                log.debug("%s of %s [%d, %d) failed: %s", step, path, start, end, exc)
        raise VideoError("; ".join(failures))
    finally:
        reader.close()


def _copy(path: str, first_pts: int, last_pts: int, frames: int) -> bytes:
    buffer = io.BytesIO()
    written = 0
    with av.open(path) as src, av.open(buffer, "w", format="mp4") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        for packet in src.demux(stream):
            if packet.pts is None or not packet.size or packet.is_discard or not first_pts <= packet.pts <= last_pts:
                continue
            packet.pts -= first_pts
            packet.dts = packet.dts - first_pts if packet.dts is not None else None
            packet.stream = out
            dst.mux(packet)
            written += 1
        packet = stream = None  # noqa: F841 - nothing of the input may outlive its container (engine.video)
    if written != frames:
        raise ValueError(f"the copy holds {written} packets for {frames} frames")
    return buffer.getvalue()


def _encode(reader: PyAVReader, start: int, end: int, crf: int, preset: str, max_side: int,
            constant_rate: bool) -> bytes:
    """Re-encode the clip's frames: with their own timestamps (made relative to the clip's first), or with
    ``constant_rate`` timestamps ``0, 1, 2, ...`` at the stream's average rate."""
    ctx = reader.stream.codec_context
    width, height = ctx.width, ctx.height
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = round(width * scale), round(height * scale)
    width, height = max(2, width - width % 2), max(2, height - height % 2)
    rate = reader.stream.average_rate or reader.stream.guessed_rate or Fraction(round(reader.fps * 1000), 1000)
    source_base = reader.stream.time_base
    time_base = 1 / Fraction(rate) if constant_rate else Fraction(1, 90000)
    buffer = io.BytesIO()
    count, previous, first = 0, -1, None
    with av.open(buffer, "w", format="mp4") as dst:
        out = dst.add_stream("libx264", rate=rate)
        out.width, out.height, out.pix_fmt = width, height, "yuv420p"
        out.time_base = out.codec_context.time_base = time_base  # a coarser codec base would merge VFR stamps
        out.options = {"crf": str(crf), "preset": preset, "x264-params": X264_PARAMS}
        out.codec_context.thread_count = ENCODER_THREADS
        span = reader.iter_span(start, end)
        try:
            for _, frame in span:
                if constant_rate:
                    pts = count
                else:
                    first = frame.pts if first is None else first
                    pts = round((frame.pts - first) * source_base / time_base)
                    if pts <= previous:
                        raise ValueError(f"timestamps do not increase at frame {start + count}")
                picture = frame.reformat(width=width, height=height, format="yuv420p")
                picture.pict_type = PictureType.NONE  # x264 obeys a frame's type: the source's are not the clip's
                picture.pts, picture.time_base = pts, time_base
                previous = pts
                count += 1
                for packet in out.encode(picture):
                    dst.mux(packet)
        finally:
            span.close()
        if count != end - start:
            raise VideoError(f"only {count} of the clip's {end - start} frames decode (damaged stream)")
        for packet in out.encode(None):
            dst.mux(packet)
        out = None
    return buffer.getvalue()

"""Clip files: each clip row written as ``<out>/clips/<clip_id>.mp4``.

Stream copy when it is exact (the clip starts on a keyframe of a stream without frame reordering), else
a libx264 re-encode of exactly the clip's frames with their original timing (VFR kept). Files are written
to a temporary name and renamed, so no reader sees half a file; a resumed run skips the clips whose results
the stage stored and writes the others again.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Literal

import av
import pyarrow as pa

from engine.io import join, local_copy, output_fs, write_atomic
from engine.stage import RunContext, Stage, StageError, map_rows
from engine.video import VideoError, iter_frames

log = logging.getLogger(__name__)
# x264 with frame threads gave different bytes for the same clip between runs on a busy machine, so each
# clip is encoded on one thread and clips are encoded in parallel instead. That removed most of the
# variation, not all of it: a clip can still differ by a few bytes under load (cause not found); manifests
# and clip boundaries stay exact, and a resumed run keeps the files already written.
ENCODER_THREADS = 1


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
            raise StageError(f"cannot write clip {row['clip_id']}: {exc}") from None
        write_atomic(self.fs, target, data)
        return {**row, "clip_uri": uri, "clip_bytes": len(data), "clip_written_by": how}


def cut_clip(path: str, start: int, end: int, mode: str = "auto", crf: int = 18, preset: str = "veryfast",
             max_side: int = 0) -> tuple[bytes, str]:
    """Frames ``[start, end)`` of ``path`` (decoded-frame indices) as mp4 bytes, and "copy" or "encode"."""
    # Keep plain numbers, not Packet objects: a Packet outliving its container frees the decoder late,
    # which deadlocks FFmpeg's frame threads.
    with av.open(path) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, bool(p.is_keyframe)) for p in container.demux(stream) if p.size and p.pts is not None]
        del stream
    decode_order = [pts for pts, _ in packets]
    keyframes = {pts for pts, key in packets if key}
    pts_sorted = sorted(decode_order)
    if end > len(pts_sorted) or start >= end:
        raise VideoError(f"frames [{start}, {end}) are outside the stream's {len(pts_sorted)} frames")
    first, last = pts_sorted[start], pts_sorted[end - 1]
    reorders = decode_order != pts_sorted
    if mode == "copy" or (mode == "auto" and first in keyframes and not reorders and not max_side):
        if first not in keyframes:
            raise VideoError(f"frame {start} is not a keyframe; a stream copy would not decode (use mode: encode)")
        try:
            return _copy(path, first, last), "copy"
        except (av.error.FFmpegError, ValueError) as exc:  # e.g. a codec the mp4 muxer will not take as is
            if mode == "copy":
                raise VideoError(f"stream copy failed ({type(exc).__name__}: {exc})") from None
            log.debug("stream copy of %s failed (%s); re-encoding", path, exc)
    return _encode(path, start, end, crf, preset, max_side), "encode"


def _copy(path: str, first_pts: int, last_pts: int) -> bytes:
    buffer = io.BytesIO()
    with av.open(path) as src, av.open(buffer, "w", format="mp4") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        for packet in src.demux(stream):
            if packet.pts is None or not packet.size or not first_pts <= packet.pts <= last_pts:
                continue
            packet.pts -= first_pts
            packet.dts = packet.dts - first_pts if packet.dts is not None else None
            packet.stream = out
            dst.mux(packet)
        packet = stream = None  # noqa: F841 - nothing of the input may outlive its container (engine.video)
    return buffer.getvalue()


def _encode(path: str, start: int, end: int, crf: int, preset: str, max_side: int) -> bytes:
    buffer = io.BytesIO()
    with av.open(path) as src, av.open(buffer, "w", format="mp4") as dst:
        # Slice threads only: a frame-threaded decoder freed after its container closed deadlocks FFmpeg
        # (engine.video.iter_frames), and x264 dominates the time here anyway.
        stream = src.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if max_side and max(width, height) > max_side:
            scale = max_side / max(width, height)
            width, height = round(width * scale), round(height * scale)
        width, height = max(2, width - width % 2), max(2, height - height % 2)
        time_base = Fraction(1, 90000)
        out = dst.add_stream("libx264", rate=stream.average_rate or 25)
        out.width, out.height, out.pix_fmt, out.time_base = width, height, "yuv420p", time_base
        out.options = {"crf": str(crf), "preset": preset}
        out.codec_context.thread_count = ENCODER_THREADS
        first_time = None
        frames = iter_frames(src, stream)
        for index, frame in enumerate(frames):
            if index >= end:
                break
            if index < start:
                continue
            seconds = float(frame.pts * stream.time_base) if frame.pts is not None else index / 25
            first_time = seconds if first_time is None else first_time
            picture = frame.reformat(width=width, height=height, format="yuv420p")
            picture.pts = round((seconds - first_time) / time_base)
            picture.time_base = time_base
            for encoded in out.encode(picture):
                dst.mux(encoded)
        frames.close()  # release the demuxer's last packet while the container is still open
        for encoded in out.encode(None):
            dst.mux(encoded)
        del stream
    return buffer.getvalue()

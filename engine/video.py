"""Video metadata and frame access.

``probe_video`` reads the container and the packet timestamps (no full decode) and decodes one frame to
prove the stream decodes. ``open_video`` returns a ``VideoReader`` with frame-accurate random access
behind one interface: PyAV (the faster for sparse access here, see bench/bench_decode.py; decodes AV1,
alpha, odd containers) or decord (the design card's choice; FFmpeg 4.1, no AV1). Frames come back as
RGB uint8 in display orientation
(rotation metadata applied), indexed over decoded frames in presentation order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import av
import numpy as np

log = logging.getLogger(__name__)
# FFmpeg's warnings would go to stderr; errors are reported as rows instead. Only libav's own level is set:
# PyAV's Python log callback (installed by av.logging.set_level) makes FFmpeg's frame-decoding threads take
# the GIL for every message, and a thread that holds the GIL while it waits for them then deadlocks
# (seen under load in a gdb backtrace: the decoder threads blocked in av.logging's callback).
av.logging.set_level(None)
av.logging.set_libav_level(av.logging.PANIC)


class VideoError(Exception):
    """The file cannot be read as a video; the message says why."""


@dataclass(kw_only=True, slots=True)
class VideoInfo:
    duration_s: float  # from the first to past the last frame's presentation time
    fps: float  # average frame rate over the stream (frames / duration): right for VFR too
    nominal_fps: float  # the container's declared rate
    frames: int  # frame count from packet timestamps (decode-free)
    width: int  # coded width
    height: int  # coded height
    display_width: int  # after rotation and sample aspect ratio
    display_height: int
    rotation: int  # degrees clockwise the decoded picture must turn to display upright (0/90/180/270)
    sar: str  # sample aspect ratio "num:den"
    codec: str
    pix_fmt: str
    container_start_s: float  # first presentation time in the container (reported; clip times start at 0)
    vfr: bool  # frame durations vary by more than one tick
    has_alpha: bool
    video_streams: int
    audio_streams: int


def probe_video(path: str) -> VideoInfo:
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"not a readable media file ({_why(exc)})") from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoError(f"no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if not ctx.width or not ctx.height:
            raise VideoError("video stream has no frame size")
        pts = _packet_pts(container, stream)
        if not pts:
            raise VideoError("video stream has no packets")
        rotation = _first_frame_rotation(path)
        time_base = float(stream.time_base) if stream.time_base else 1.0
        deltas = np.diff(pts) if len(pts) > 1 else np.array([])
        tick = float(np.median(deltas)) if deltas.size else 0.0
        last_duration = tick if tick > 0 else (1.0 / float(stream.average_rate or 25)) / time_base
        duration = (pts[-1] - pts[0] + last_duration) * time_base
        nominal = float(stream.average_rate or stream.guessed_rate or 0) or (len(pts) / duration if duration else 0.0)
        sar = stream.sample_aspect_ratio or Fraction(1, 1)
        display_w = max(1, round(ctx.width * float(sar))) if sar else ctx.width
        display_h = ctx.height
        if rotation in (90, 270):
            display_w, display_h = display_h, display_w
        return VideoInfo(
            duration_s=float(duration),
            fps=float(len(pts) / duration) if duration > 0 else nominal,
            nominal_fps=float(nominal),
            frames=len(pts),
            width=ctx.width,
            height=ctx.height,
            display_width=display_w,
            display_height=display_h,
            rotation=rotation,
            sar=f"{sar.numerator}:{sar.denominator}",
            codec=ctx.name,
            pix_fmt=ctx.pix_fmt or "",
            container_start_s=float(pts[0] * time_base),
            vfr=bool(deltas.size and (deltas.max() - deltas.min()) > max(1.0, 0.1 * tick)),
            has_alpha=_has_alpha(stream),
            video_streams=len(container.streams.video),
            audio_streams=len(container.streams.audio),
        )


def iter_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                skipped: list[int] | None = None) -> Iterator[av.VideoFrame]:
    """Decoded frames in presentation order; packets that fail to decode are skipped (counted in
    ``skipped[0]``).

    No packet is held between yields. A Packet or Stream that outlives its container frees a frame-threaded
    decoder late, and FFmpeg's frame threads then deadlock (PyAV 18); callers also drop their Stream
    references before the container closes."""
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            if skipped is not None:
                skipped[0] += 1
            frames = []
        del packet
        yield from frames


def _has_alpha(stream: av.video.stream.VideoStream) -> bool:
    # VP8/VP9 keep alpha in a side stream flagged by metadata; other codecs in the pixel format.
    flagged = any(k.lower() == "alpha_mode" and str(v) == "1" for k, v in stream.metadata.items())
    return flagged or (stream.codec_context.pix_fmt or "").startswith(("yuva", "rgba", "bgra", "argb", "abgr", "gbrap"))


def _packet_pts(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> list[int]:
    """Sorted presentation timestamps of the stream's packets: frame count and timing without decoding."""
    pts = []
    try:
        for packet in container.demux(stream):
            if packet.size and packet.pts is not None:
                pts.append(packet.pts)
            elif packet.size and packet.dts is not None:
                pts.append(packet.dts)
    except av.error.FFmpegError as exc:
        if not pts:
            raise VideoError(f"cannot read packets ({_why(exc)})") from None
        log.debug("packet read stopped early: %s", exc)
    return sorted(set(pts))


def _first_frame_rotation(path: str) -> int:
    """Decode the first frame: proves the stream decodes and gives the display rotation, clockwise.
    (FFmpeg's display-matrix angle, which PyAV reports, is counter-clockwise.)"""
    try:
        with av.open(path) as container:
            for frame in container.decode(video=0):
                return (-int(frame.rotation or 0)) % 360
    except av.error.FFmpegError as exc:
        raise VideoError(f"first frame does not decode ({_why(exc)})") from None
    raise VideoError("no frame could be decoded")


def _why(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return f"{type(exc).__name__}: {text}".strip()


# ---------------------------------------------------------------------------------------------------------
# Frame readers


class VideoReader(Protocol):
    backend: str
    num_frames: int  # decodable frames
    fps: float

    def get_frames(self, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        """Frames ``indices`` (ascending or not) as uint8 RGB ``[N, H, W, 3]``, resized to ``size`` = (w, h)."""
        ...

    def close(self) -> None: ...


def _rotate(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Turn ``[N, H, W, C]`` frames clockwise by ``rotation`` degrees (np.rot90 turns counter-clockwise)."""
    k = (-(rotation // 90)) % 4
    return np.ascontiguousarray(np.rot90(frames, k=k, axes=(1, 2))) if k else frames


def _resize(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (frames.shape[2], frames.shape[1]) == tuple(size):
        return frames
    import cv2

    interp = cv2.INTER_AREA if size[0] < frames.shape[2] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, size, interpolation=interp) for f in frames])


class PyAVReader:
    """Frame-accurate random access by seeking to the nearest keyframe before each target and decoding
    forward; consecutive targets reuse the open decoder instead of seeking again."""

    backend = "pyav"

    def __init__(self, path: str):
        self.path = path
        container = av.open(path)
        # The stream attribute is set before the container's, so when a reader is dropped without close()
        # its stream reference goes first and the container frees its own decoder, as FFmpeg needs.
        self.stream = container.streams.video[0]
        self.container = container
        self.stream.thread_type = "AUTO"
        self.pts = _packet_pts(self.container, self.stream)  # get_frames seeks before every decode run
        self.num_frames = len(self.pts)
        self.rotation = 0  # clockwise; read from the frames get_frames decodes, no second open of the file
        time_base = float(self.stream.time_base or 1)
        span = (self.pts[-1] - self.pts[0]) * time_base if len(self.pts) > 1 else 0
        self.fps = (len(self.pts) - 1) / span if span > 0 else float(self.stream.average_rate or 25)
        self._index_of = {p: i for i, p in enumerate(self.pts)}

    def get_frames(self, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        if len(indices) == 0:
            return np.zeros((0, size[1] if size else 0, size[0] if size else 0, 3), np.uint8)
        order = sorted(set(int(i) for i in indices))
        for i in order:
            if not 0 <= i < self.num_frames:
                raise IndexError(f"frame {i} out of range [0, {self.num_frames})")
        got: dict[int, np.ndarray] = {}
        decoder = None
        position = -1
        for target in order:
            if decoder is None or target < position or target - position > 64:
                if decoder is not None:
                    decoder.close()
                self.container.seek(int(self.pts[target]), stream=self.stream, backward=True, any_frame=False)
                decoder = iter_frames(self.container, self.stream)  # skips packets that fail to decode
                position = -1
            for frame in decoder:
                position = self._index_of.get(frame.pts, position + 1)
                # past the target means the exact frame did not decode (corrupt packet): take the next one
                if position >= target:
                    got[target] = frame.to_ndarray(format="rgb24")
                    self.rotation = (-int(frame.rotation or 0)) % 360
                    break
            else:
                decoder.close()
                raise VideoError(f"frame {target} could not be decoded")
        if decoder is not None:
            decoder.close()
        frames = np.stack([got[int(i)] for i in indices])
        return _resize(_rotate(frames, self.rotation), size)

    def close(self) -> None:
        self.stream = None  # a frame-threaded decoder must not outlive its container (iter_frames)
        self.container.close()


class DecordReader:
    backend = "decord"

    def __init__(self, path: str):
        import decord

        self.path = path
        try:
            self.reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=0)
        except decord.DECORDError as exc:
            raise VideoError(f"decord cannot open it ({str(exc).splitlines()[0][:200]})") from None
        self.num_frames = len(self.reader)
        self.fps = float(self.reader.get_avg_fps())
        self.rotation = 0  # decord's FFmpeg applies the display rotation itself

    def get_frames(self, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        for i in indices:
            if not 0 <= int(i) < self.num_frames:
                raise IndexError(f"frame {i} out of range [0, {self.num_frames})")
        frames = self.reader.get_batch([int(i) for i in indices]).asnumpy()
        return _resize(_rotate(frames, self.rotation), size)

    def close(self) -> None:
        del self.reader


# Codecs decord 0.6 (FFmpeg 4.1) cannot decode or decodes wrongly: AV1 fails to open, 10-bit and alpha
# streams lose information. PyAV handles them.
DECORD_SKIP_CODECS = {"av1", "libdav1d", "libaom-av1"}


# The reader "auto" tries first. bench/bench_decode.py (2-core machine, 5 shared videos, 12 clips each, 8
# frames per clip, file opened per clip as the stages do): PyAV 4.46 s, decord 5.74 s -- PyAV 1.29x faster
# (1.41x once the reader stopped opening each file twice), both frame-exact. decord stays as the fallback
# and as an explicit choice.
PREFERRED_BACKEND = "pyav"


def open_video(path: str, backend: str = "auto", codec: str | None = None) -> VideoReader:
    """A reader for ``path``: ``pyav``, ``decord``, or ``auto`` (the benchmark's winner, the other one if
    it cannot open the file; decord is never tried on codecs it cannot decode, such as AV1)."""
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"unknown video backend '{backend}' (use auto, decord or pyav)")
    if backend == "auto":
        order = [PREFERRED_BACKEND] + [b for b in ("pyav", "decord") if b != PREFERRED_BACKEND]
        order = [b for b in order if not (b == "decord" and codec in DECORD_SKIP_CODECS)]
    else:
        order = [backend]
    readers = {"pyav": PyAVReader, "decord": DecordReader}
    for i, name in enumerate(order):
        try:
            return readers[name](path)
        except (VideoError, RuntimeError, ImportError, av.error.FFmpegError) as exc:
            if i == len(order) - 1:
                raise
            log.debug("%s failed on %s (%s); trying %s", name, path, exc, order[i + 1])
    raise AssertionError("unreachable")


def clip_frame_indices(start: int, end: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over ``[start, end)`` (first and last included)."""
    n = end - start
    if n <= 0:
        return []
    if count >= n:
        return list(range(start, end))
    if count == 1:
        return [start + n // 2]
    return [start + round(i * (n - 1) / (count - 1)) for i in range(count)]


"""Video metadata and frame access.

``probe_video`` reads the container and the packet timestamps (no full decode) and decodes one frame to
prove the stream decodes. ``open_video`` returns a ``VideoReader``: frames as RGB uint8 in display
orientation (rotation metadata applied), indexed over decoded frames in presentation order. Frame N is the
N-th frame of a full sequential decode, which is also what the probe counts and the splitter numbers;
``PyAVReader`` returns exactly that for any index set (see its docstring for how). decord is kept as an
explicit choice only: it names frames by timestamp, which is wrong on files whose timestamps are (packed
B-frames in AVI, VP8 without cues).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import av
import numpy as np
from av.video.frame import PictureType

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
        pts = scan_packets(container, stream).pts
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


DECODER_THREAD_TYPE, DECODER_THREADS = "SLICE", 1


def configure_decoder(stream: av.video.stream.VideoStream) -> None:
    """One decoder set-up for every reader of frames that are kept (readers, clip files).

    The frames FFmpeg conceals after a damaged packet depend on its thread count (decord-corrupted.mp4:
    1, 2, 3 and 8 threads give four different pictures for frames 29-48), and its default count follows the
    machine's cores. One thread gives every machine the same pixels; parallelism comes from decoding several
    videos at once instead."""
    stream.thread_type = DECODER_THREAD_TYPE
    stream.codec_context.thread_count = DECODER_THREADS


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


@dataclass(frozen=True, slots=True)
class PacketIndex:
    """What the packets say without decoding: the frame timeline and where decoding may start."""

    pts: list[int]  # sorted presentation timestamps, one per frame (the probe's frame count)
    keyframes: list[int]  # sorted timestamps of packets flagged as keyframes (seek targets)
    trusted: bool  # timestamps can name frames: present, unique, from a container that stores them
    reorders: bool  # decode order differs from presentation order (B-frames)


# AVI stores no presentation times: FFmpeg derives them from a frame counter, and MPEG-4 Part 2 with packed
# B-frames then comes out of the decoder in display order but with the timestamps of decode order.
UNTIMED_FORMATS = {"avi"}


def scan_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> PacketIndex:
    """Index the stream's packets (no decoding). Packets an edit list discards are not frames."""
    pts: list[int] = []
    keyframes: list[int] = []
    missing = 0
    try:
        for packet in container.demux(stream):
            if not packet.size or packet.is_discard:
                continue
            stamp = packet.pts
            if stamp is None:
                missing += 1
                stamp = packet.dts
            if stamp is None:
                continue
            pts.append(stamp)
            if packet.is_keyframe:
                keyframes.append(stamp)
    except av.error.FFmpegError as exc:
        if not pts:
            raise VideoError(f"cannot read packets ({_why(exc)})") from None
        log.debug("packet read stopped early: %s", exc)
    unique = sorted(set(pts))
    trusted = (not missing and len(unique) == len(pts)
               and not UNTIMED_FORMATS & set(container.format.name.split(",")))
    return PacketIndex(pts=unique, keyframes=sorted(set(keyframes)), trusted=trusted, reorders=pts != unique)


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


class _Untrusted(Exception):
    """The decoded timestamps contradict the packet index: frames must be counted instead."""


class SpanRestart(Exception):
    """``iter_span`` found part-way that timestamps cannot name this file's frames; the reader now counts
    frames, so the caller starts the span again."""


def _is_keyframe(frame: av.VideoFrame) -> bool:
    return bool(frame.key_frame) or frame.pict_type == PictureType.I


class PyAVReader:
    """Exact random access: frame N is the N-th frame of a full sequential decode (decoders emit frames in
    presentation order), whatever the container, codec or index set.

    Where timestamps can name frames (``PacketIndex.trusted``), it seeks to the last keyframe at or before
    the target and checks where it landed: the first frame it trusts is a decoded keyframe (an open GOP's
    leading pictures, decoded from a missing reference, come before it and are dropped), and a landing past
    the target steps back one keyframe, then decodes from the start. Frames are named by their timestamp's
    rank. Decoded timestamps that are unknown, go backwards or skip a frame (a packet that did not decode)
    mean they cannot name frames in this file, and from then on frames are counted in a decode from the
    start; so they are too when ``decoded_frames`` (a full decode's count, e.g. the splitter's) differs from
    the packet count. Damaged tail: a frame past the last one that decodes is given as the last decodable
    frame; the indices this happened to are in ``substituted`` after each call.
    """

    backend = "pyav"

    def __init__(self, path: str, decoded_frames: int | None = None):
        self.path = path
        self._open()
        index = scan_packets(self.container, self.stream)
        if not index.pts:
            self.close()
            raise VideoError("video stream has no packets")
        self.pts = index.pts
        self.keyframes = index.keyframes or self.pts[:1]
        self.reorders = index.reorders
        self.num_frames = len(self.pts)
        # A full decode that gave fewer frames than there are packets (the splitter's count) lost frames to
        # damaged packets: only counting numbers the frames after them as that decode did.
        lost = decoded_frames is not None and decoded_frames != self.num_frames
        self.by_timestamp = index.trusted and not lost  # False: frames are counted in a decode from the start
        self.rotation = 0  # clockwise; read from the frames get_frames decodes, no second open of the file
        time_base = float(self.stream.time_base or 1)
        span = (self.pts[-1] - self.pts[0]) * time_base if len(self.pts) > 1 else 0
        self.fps = (len(self.pts) - 1) / span if span > 0 else float(self.stream.average_rate or 25)
        self._rank = {p: i for i, p in enumerate(self.pts)}
        self.substituted: list[int] = []  # indices of the last call given as the last decodable frame
        self.damaged = 0  # packets that failed to decode so far
        self.decodable: int | None = None  # frames a decode from the start gave, once one reached the end

    def _open(self) -> None:
        container = av.open(self.path)
        # The stream attribute is set before the container's, so when a reader is dropped without close()
        # its stream reference goes first and the container frees its own decoder, as FFmpeg needs.
        self.stream = container.streams.video[0]
        self.container = container
        configure_decoder(self.stream)

    def get_frames(self, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        if len(indices) == 0:
            return np.zeros((0, size[1] if size else 0, size[0] if size else 0, 3), np.uint8)
        order = sorted(set(int(i) for i in indices))
        for i in order:
            if not 0 <= i < self.num_frames:
                raise IndexError(f"frame {i} out of range [0, {self.num_frames})")
        self.substituted = []
        got: dict[int, np.ndarray] = {}
        if self.by_timestamp:
            try:
                self._by_timestamp(order, got)
            except _Untrusted as why:
                log.debug("%s: %s; counting frames from the start", self.path, why)
                self.by_timestamp, got = False, {}
        if not self.by_timestamp:
            self._by_counting(order, got)
        frames = np.stack([got[int(i)] for i in indices])
        return _resize(_rotate(frames, self.rotation), size)

    # -- the two ways to find frames ---------------------------------------------------------------------
    def _by_timestamp(self, order: list[int], got: dict[int, np.ndarray]) -> None:
        i = 0
        while i < len(order):
            frames = self._landed(order[i])
            try:
                for position, frame in frames:
                    if position == order[i]:
                        got[position] = self._rgb(frame)
                        i += 1
                        if i == len(order) or self._key_index(order[i]) > self._key_index(position):
                            break  # done, or a keyframe lies between: seeking there beats decoding up to it
                else:
                    raise _Untrusted(f"the stream ends before frame {order[i]}")
            finally:
                frames.close()

    def _by_counting(self, order: list[int], got: dict[int, np.ndarray]) -> None:
        j, position, last = 0, -1, None
        frames = self._counted()
        try:
            for position, frame in frames:
                last = frame
                if position == order[j]:
                    got[position] = self._rgb(frame)
                    j += 1
                    if j == len(order):
                        return
            if last is None:
                raise VideoError("no frame could be decoded")
            tail = got.get(position)
            tail = self._rgb(last) if tail is None else tail
        finally:
            last = None
            frames.close()
        self.substituted = order[j:]  # past the last decodable frame: the damaged-tail policy
        for target in self.substituted:
            got[target] = tail

    def iter_span(self, start: int, end: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """Frames ``start..end-1`` as decoded (not converted), numbered as ``get_frames`` numbers them; with
        ``by_timestamp`` their ``pts`` are the source's, in order. Raises ``SpanRestart`` when the
        timestamps turn out unable to name frames part-way (the reader counts from then on: start again);
        a span past the last decodable frame ends early."""
        frames = self._landed(start) if self.by_timestamp else self._counted()
        try:
            for position, frame in frames:
                if position >= end:
                    return
                if position >= start:
                    yield position, frame
        except _Untrusted as why:
            self.by_timestamp = False
            raise SpanRestart(str(why)) from None
        finally:
            frames.close()

    # -- numbered frames --------------------------------------------------------------------------------
    def _key_index(self, frame: int) -> int:
        return bisect.bisect_right(self.keyframes, self.pts[frame]) - 1

    def _landed(self, target: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """Numbered frames from the last keyframe at or before ``target``, one keyframe earlier when the seek
        landed past it, or from the start."""
        k = max(0, self._key_index(target))
        for start in (k, k - 1, None):  # None: decode from the start, which cannot land late
            if start is not None and start < 0:
                continue
            frames = self._numbered(start)
            first = next(frames, None)
            if first is None:
                raise _Untrusted(f"nothing decodes after the seek to frame {target}")
            if first[0] <= target:
                return self._chain(first, frames)
            frames.close()
        raise AssertionError("a decode from the start landed past a frame")

    @staticmethod
    def _chain(first: tuple[int, av.VideoFrame], rest: Iterator) -> Iterator[tuple[int, av.VideoFrame]]:
        try:
            yield first
            yield from rest
        finally:
            rest.close()

    def _numbered(self, start: int | None) -> Iterator[tuple[int, av.VideoFrame]]:
        """Frames from keyframe ``start`` (None: the beginning) named by timestamp rank. Raises _Untrusted
        when a decoded timestamp is unknown, goes backwards or skips a frame."""
        if start is None:
            self._reopen()
        else:
            self.container.seek(self.keyframes[start], stream=self.stream, backward=True, any_frame=False)
        trusted, last = start is None, -1
        frames = self._decode()
        try:
            for frame in frames:
                if not trusted:
                    if not _is_keyframe(frame):
                        continue  # a leading picture or one whose reference lies before the seek point
                    trusted = True
                position = self._rank.get(frame.pts) if frame.pts is not None else None
                if position is None:
                    raise _Untrusted(f"decoded timestamp {frame.pts} is not in the packet index")
                if last >= 0 and position != last + 1:
                    raise _Untrusted(f"decoded timestamps go from frame {last} to {position}")
                if start is None and last < 0 and position != 0:
                    raise _Untrusted(f"decoding from the start begins at frame {position}")
                last = position
                yield position, frame
        finally:
            frames.close()

    def _counted(self) -> Iterator[tuple[int, av.VideoFrame]]:
        """Frames of a decode from the start, numbered by counting; sets ``decodable`` at the end."""
        self._reopen()
        position = -1
        frames = self._decode()
        try:
            for position, frame in enumerate(frames):
                yield position, frame
            self.decodable = position + 1
        finally:
            frames.close()

    # -- decoding ---------------------------------------------------------------------------------------
    def _decode(self) -> Iterator[av.VideoFrame]:
        """Frames from the current position; a packet that does not decode is counted and skipped, and a
        demuxer error ends the stream (a truncated file)."""
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError:
                self.damaged += 1
                return
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                self.damaged += 1
                frames = []
            del packet  # no packet is held between yields (see iter_frames)
            yield from frames

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        self.rotation = (-int(frame.rotation or 0)) % 360
        return frame.to_ndarray(format="rgb24")

    def _reopen(self) -> None:
        self.stream = None  # a frame-threaded decoder must not outlive its container (iter_frames)
        self.container.close()
        self._open()

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


def open_video(path: str, backend: str = "auto", codec: str | None = None,
               decoded_frames: int | None = None) -> VideoReader:
    """A reader for ``path``: ``auto`` or ``pyav`` (exact), or ``decord`` (asked for by name only; not exact
    where timestamps mislead). ``codec`` is accepted for callers that pass the probe's codec;
    ``decoded_frames`` is a full decode's frame count where one is known (see ``PyAVReader``)."""
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"unknown video backend '{backend}' (use auto, decord or pyav)")
    return DecordReader(path) if backend == "decord" else PyAVReader(path, decoded_frames)


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


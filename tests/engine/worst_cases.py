"""Synthetic videos that break naive frame access, each frame carrying its own number.

Every frame shows its index as eight black/white blocks (bits, least significant first) over a textured
strip, so a decoded frame says which source frame it is without trusting any timestamp. The cases are the
ones that mislead seeking readers: MPEG-4 Part 2 with B-frames in AVI, VP8 and VP9 WebM without cues (with
hidden alt-ref frames), open GOPs, variable frame rate, an edit list, a second video stream, damaged packets.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT = 128, 64


def numbered_frame(i: int) -> np.ndarray:
    """RGB frame ``i``: its number in blocks on top, a moving texture below (so codecs predict across frames)."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for bit in range(8):
        if (i >> bit) & 1:
            image[:32, bit * 16:(bit + 1) * 16] = 255
    y, x = np.mgrid[0:32, 0:WIDTH]
    image[32:] = (((x + 3 * i) // 8 + y // 8) % 2 * 120 + 60)[..., None].astype(np.uint8)
    return image


def frame_number(rgb: np.ndarray) -> int:
    """The number ``numbered_frame`` drew into a decoded frame (at its original size)."""
    return sum(1 << bit for bit in range(8) if rgb[4:28, bit * 16 + 4:bit * 16 + 12].mean() > 128)


def _write(path: Path, fmt: str, codec: str, count: int, *, options: dict | None = None,
           container_options: dict | None = None, gop: int = 12, b_frames: int | None = None,
           times: list[int] | None = None, time_base: Fraction = Fraction(1, 25), second_stream: bool = False) -> Path:
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as out:
        streams = []
        for _ in range(2 if second_stream else 1):
            stream = out.add_stream(codec, rate=25)
            stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
            stream.codec_context.gop_size = gop
            if b_frames is not None:
                stream.codec_context.max_b_frames = b_frames
            stream.options = dict(options or {})
            streams.append(stream)
        for i in range(count):
            for k, stream in enumerate(streams):
                frame = av.VideoFrame.from_ndarray(numbered_frame(i if k == 0 else 255 - i), format="rgb24")
                frame.pts = times[i] if times else i
                frame.time_base = time_base
                for packet in stream.encode(frame):
                    out.mux(packet)
        for stream in streams:
            for packet in stream.encode(None):
                out.mux(packet)
        del streams, stream
    return path


def mpeg4_avi(folder: Path) -> Path:
    """MPEG-4 Part 2 (ASP) with two B-frames between references in AVI: decode order != display order."""
    return _write(folder / "mpeg4_bframes.avi", "avi", "mpeg4", 90, b_frames=2, options={"qscale": "3"})


def vp8_without_cues(folder: Path) -> Path:
    """VP8 WebM written as a live stream (no cues to seek by) with hidden alt-ref frames."""
    return _write(folder / "vp8_nocues.webm", "webm", "libvpx", 90, gop=15, container_options={"live": "1"},
                  options={"auto-alt-ref": "1", "lag-in-frames": "10", "b": "400k"})


def vp9_without_cues(folder: Path) -> Path:
    """VP9 WebM without cues; alt-ref frames travel in superframes."""
    return _write(folder / "vp9_nocues.webm", "webm", "libvpx-vp9", 70, gop=20, container_options={"live": "1"},
                  options={"auto-alt-ref": "1", "lag-in-frames": "10", "b": "400k", "deadline": "realtime",
                           "cpu-used": "8"})


def open_gop(folder: Path) -> Path:
    """H.264 with open GOPs: the B-frames before each non-IDR I-frame reference the previous GOP."""
    return _write(folder / "open_gop.mkv", "matroska", "libx264", 90, gop=12, b_frames=3,
                  options={"x264-params": "open-gop=1:keyint=12:min-keyint=12:scenecut=0:bframes=3:b-pyramid=0",
                           "preset": "veryfast"})


def variable_rate(folder: Path) -> Path:
    """H.264 in MP4 with frame durations of 20-80 ms, B-frames and an edit list (it starts at 0.5 s)."""
    steps = [40, 40, 20, 80, 33, 60, 20, 20, 40, 70]
    times, t = [], 500
    for i in range(80):
        times.append(t)
        t += steps[i % len(steps)]
    return _write(folder / "vfr.mp4", "mp4", "libx264", 80, gop=20, b_frames=2, times=times,
                  time_base=Fraction(1, 1000), options={"preset": "veryfast"})


def two_video_streams(folder: Path) -> Path:
    """Two video streams in one Matroska file; the first is the one read."""
    return _write(folder / "two_streams.mkv", "matroska", "libx264", 50, gop=10, b_frames=2,
                  options={"preset": "veryfast"}, second_stream=True)


def damaged(folder: Path) -> Path:
    """H.264 in MP4 with two packets whose NAL units are zeroed: they fail to decode, so a full decode gives
    two frames fewer than the packets count (and conceals the loss in the frames after)."""
    path = _write(folder / "damaged_src.mp4", "mp4", "libx264", 80, gop=10, b_frames=0, options={"preset": "veryfast"})
    with av.open(str(path)) as container:
        spots = [(p.pos, p.size) for p in container.demux(video=0) if p.size and p.pos is not None]
    data = bytearray(path.read_bytes())
    for pos, size in (spots[33], spots[57]):
        data[pos + 4:pos + size] = bytes(size - 4)  # keep the 4-byte length prefix, zero the NAL unit
    target = folder / "damaged.mp4"
    target.write_bytes(bytes(data))
    path.unlink()
    return target


CASES = {"mpeg4_avi": mpeg4_avi, "vp8_nocues": vp8_without_cues, "vp9_nocues": vp9_without_cues,
         "open_gop": open_gop, "vfr": variable_rate, "two_streams": two_video_streams, "damaged": damaged}

"""The probe stage: container and stream metadata for every input video, and a check that the file is whole."""

from __future__ import annotations

import dataclasses
import os
import struct
from dataclasses import dataclass
from typing import ClassVar

import av
import pyarrow as pa

from engine.io import local_copy
from engine.stage import Stage, StageError, map_rows
from engine.video import VideoError, VideoInfo, probe_video

_TYPES = {int: pa.int32(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}
PROBE_COLUMNS: dict[str, pa.DataType] = {
    f.name: _TYPES[f.type if isinstance(f.type, type) else eval(f.type)]  # noqa: S307 - our own annotations
    for f in dataclasses.fields(VideoInfo)
}
# How many of the frames an index promises may be missing before a file counts as truncated: indexes can be
# off by a frame or two (a corrupt packet, an edit list), a cut file misses far more.
MISSING_FRAMES_TOLERATED = 2
MISSING_FRACTION_TOLERATED = 0.02


@dataclass(kw_only=True)
class Probe(Stage):
    """Duration, frame count and rate (VFR-aware), size, rotation, SAR, codec and streams of each video.

    Videos that cannot be opened, have no video stream, no decodable frame, or frames smaller than
    ``min_side`` become error rows naming the cause, and so do truncated files: fewer frames in the file than
    the container's index lists (MP4/MOV, AVI), or fewer bytes than its header declares (MP4/MOV, Matroska/
    WebM). A file without such an index (an MPEG stream, a WebM without duration) cannot be checked and passes.
    """

    name: ClassVar[str] = "probe"
    reads: ClassVar[tuple[str, ...]] = ("uri",)
    adds: ClassVar[dict[str, pa.DataType]] = PROBE_COLUMNS

    min_side: int = 16  # smaller frames cannot feed any scorer or model; 0 disables the check
    batch_size: int = 16

    def process_batch(self, batch: pa.Table) -> pa.Table:
        return map_rows(batch, self.name, self._probe)

    def _probe(self, row: dict) -> dict:
        if row.get("bytes") == 0:
            raise StageError("empty file (0 bytes)")
        try:
            with local_copy(row["uri"]) as path:
                info = probe_video(path)
                truncation = truncation_problem(path, info.frames)
        except (VideoError, OSError) as exc:
            raise StageError(str(exc)) from None
        if truncation:
            raise StageError(truncation)
        if self.min_side and min(info.width, info.height) < self.min_side:
            raise StageError(f"frame size {info.width}x{info.height} is below the minimum side "
                             f"{self.min_side} px (probe.min_side)")
        return {**row, **dataclasses.asdict(info)}


def truncation_problem(path: str, frames_present: int) -> str | None:
    """Why ``path`` is a truncated file, or None: its index lists more frames than the ``frames_present``
    packets found, or its header declares more bytes than the file has."""
    with av.open(path) as container:
        indexed = int(container.streams.video[0].frames or 0)  # 0: the container keeps no frame count
    missing = indexed - frames_present
    if missing > max(MISSING_FRAMES_TOLERATED, MISSING_FRACTION_TOLERATED * indexed):
        return f"truncated: index has {indexed} frames, {frames_present} decode"
    declared, size = declared_size(path), os.path.getsize(path)
    if declared is not None and declared > size:
        return f"truncated: the container declares {declared} bytes, the file has {size}"
    return None


def declared_size(path: str) -> int | None:
    """The file size the container's own structure declares (ISO-BMFF boxes, the Matroska segment), or None
    where the format is another or the size is left open (a live-written WebM)."""
    with open(path, "rb") as handle:
        head = handle.read(16)
        if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"):
            return _iso_boxes_end(handle)
        if head[:4] == b"\x1a\x45\xdf\xa3":
            handle.seek(0)
            return _matroska_segment_end(handle.read(4096))
    return None


def _iso_boxes_end(handle) -> int | None:
    """Where the last top-level box ends, walking box headers only (a few seeks, no payload read)."""
    end = os.fstat(handle.fileno()).st_size
    position = 0
    while position < end:
        handle.seek(position)
        header = handle.read(16)
        if len(header) < 8:
            return position + 8  # a box header cut in half
        size = struct.unpack(">I", header[:4])[0]
        if size == 1:  # 64-bit size follows the type
            if len(header) < 16:
                return position + 16
            size = struct.unpack(">Q", header[8:16])[0]
        elif size == 0:  # the box runs to the end of the file
            return end
        if size < 8:
            return None  # not boxes after all: make no claim
        position += size
    return position


def _matroska_segment_end(head: bytes) -> int | None:
    """End of the Segment element after the EBML header, from the sizes they declare; None if unknown."""
    eid, pos = _ebml_vint(head, 0, keep_marker=True)
    if eid != 0x1A45DFA3:
        return None
    size, pos = _ebml_vint(head, pos)
    if size is None:
        return None
    eid, pos = _ebml_vint(head, pos + size, keep_marker=True)
    if eid != 0x18538067:
        return None
    size, pos = _ebml_vint(head, pos)
    return None if size is None else pos + size


def _ebml_vint(data: bytes, pos: int, keep_marker: bool = False) -> tuple[int | None, int]:
    """An EBML variable-length integer at ``pos``: (value, next position). Element ids keep their length
    marker; a size of all ones means 'unknown' (None)."""
    if pos >= len(data):
        return None, pos
    first, length = data[pos], 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8 or pos + length > len(data):
        return None, pos
    value = first if keep_marker else first & ((0x80 >> (length - 1)) - 1)
    for byte in data[pos + 1: pos + length]:
        value = (value << 8) | byte
    if not keep_marker and value == (1 << (7 * length)) - 1:
        return None, pos + length
    return value, pos + length

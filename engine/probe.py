"""The probe stage: container and stream metadata for every input video."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from engine.io import local_copy
from engine.stage import Stage, StageError, map_rows
from engine.video import VideoError, VideoInfo, probe_video

_TYPES = {int: pa.int32(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}
PROBE_COLUMNS: dict[str, pa.DataType] = {
    f.name: _TYPES[f.type if isinstance(f.type, type) else eval(f.type)]  # noqa: S307 - our own annotations
    for f in dataclasses.fields(VideoInfo)
}


@dataclass(kw_only=True)
class Probe(Stage):
    """Duration, frame count and rate (VFR-aware), size, rotation, SAR, codec and streams of each video.

    Videos that cannot be opened, have no video stream, no decodable frame, or frames smaller than
    ``min_side`` become error rows naming the cause.
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
        except (VideoError, OSError) as exc:
            raise StageError(str(exc)) from None
        if self.min_side and min(info.width, info.height) < self.min_side:
            raise StageError(f"frame size {info.width}x{info.height} is below the minimum side "
                             f"{self.min_side} px (probe.min_side)")
        return {**row, **dataclasses.asdict(info)}

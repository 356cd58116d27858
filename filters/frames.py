"""Decode once: the frames a scoring stage needs for a batch of clips, read with one reader per video.

Rows of one video (a splitter emits them together) share one ``open_video`` and one ``get_frames`` call
over the union of their frame indices, so a long video cut into many clips is opened and indexed once per
batch, not once per clip or per scorer. A video decord cannot read through is retried with PyAV; a clip
that still fails gets its own error message and its neighbours go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

IndexFn = Callable[[dict], list[int]]  # row -> frame indices to decode (display order, within the clip)
SizeFn = Callable[[dict], "tuple[int, int] | None"]  # row -> decode size (w, h), None = native


@dataclass(slots=True)
class ClipFrames:
    """What a scorer gets for one row: its frames or why there are none."""

    row: dict
    indices: list[int]  # the frame indices actually decoded (clamped to the decodable range)
    frames: np.ndarray | None  # uint8 RGB [N, H, W, 3] in display orientation
    error: str | None = None  # why there are no frames
    note: str | None = None  # frames that were skipped because they do not decode


def group_by_video(rows: list[dict]) -> dict[str, list[int]]:
    """Row positions per uri, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row["uri"], []).append(i)
    return groups


def read_video_clips(rows: list[dict], indices_of: IndexFn, size_of: SizeFn,
                     backend: str = "auto") -> list[ClipFrames]:
    """Frames for every row of ONE video (all rows share ``uri``), decoded with one reader."""
    from engine.io import local_copy
    from engine.video import open_video

    try:
        with local_copy(rows[0]["uri"]) as path:
            try:
                reader = open_video(path, backend=backend, codec=rows[0].get("codec"))
            except Exception as exc:  # noqa: BLE001 - FFmpeg/decord errors come in many types
                return [ClipFrames(row=r, indices=[], frames=None, error=f"cannot open ({_why(exc)})") for r in rows]
            try:
                return _read(path, reader, rows, indices_of, size_of, open_video)
            except Exception as exc:  # noqa: BLE001
                log.debug("batch decode of %s failed (%s); decoding frame by frame", path, _why(exc))
                return [_read_one_by_one(path, row, indices_of, size_of) for row in rows]
    except OSError as exc:  # the remote copy failed
        return [ClipFrames(row=r, indices=[], frames=None, error=f"cannot read ({_why(exc)})") for r in rows]


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _read_one_by_one(path: str, row: dict, indices_of: IndexFn, size_of: SizeFn) -> ClipFrames:
    """Slow path for a damaged stream: one sequential PyAV pass that skips packets which do not decode
    (the engine's seeking reader stops at the first one). Frame numbers count decoded frames, as the
    splitter counts them."""
    import av

    from engine.video import _first_frame_rotation, _resize, _rotate  # the readers' own orientation rules

    wanted = sorted({int(i) for i in indices_of(row)})
    got: dict[int, np.ndarray] = {}
    bad = 0
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            index = 0
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    bad += 1
                    continue
                for frame in frames:
                    if index in wanted:
                        got[index] = frame.to_ndarray(format="rgb24")
                    index += 1
                if index > wanted[-1]:
                    break
        rotation = _first_frame_rotation(path)
    except Exception as exc:  # noqa: BLE001
        return ClipFrames(row=row, indices=[], frames=None, error=f"cannot decode frames ({_why(exc)})")
    if not got:
        return ClipFrames(row=row, indices=[], frames=None, error=f"none of the sampled frames decodes "
                          f"({bad} damaged packet(s))")
    frames = _resize(_rotate(np.stack(list(got.values())), rotation), size_of(row))
    missing = len(wanted) - len(got)
    note = None
    if bad or missing:  # after a lost packet, frame numbers count the frames that did decode
        note = f"{bad} damaged packet(s) skipped" + (f"; {missing} of {len(wanted)} sampled frames missing" if missing else "")
    return ClipFrames(row=row, indices=list(got), frames=frames, note=note)


def _read(path: str, reader, rows: list[dict], indices_of: IndexFn, size_of: SizeFn,
          open_video: Callable) -> list[ClipFrames]:
    try:
        wanted, results = [], []
        for row in rows:
            idx = [min(int(i), reader.num_frames - 1) for i in indices_of(row)]
            start = int(row.get("start_frame") or 0)
            if start >= reader.num_frames:
                results.append(ClipFrames(row=row, indices=[], frames=None, error=(
                    f"clip starts at frame {start} but the video decodes only {reader.num_frames} frames")))
            else:
                results.append(ClipFrames(row=row, indices=idx, frames=None))
                wanted.append(len(results) - 1)
        if not wanted:
            return results
        size = size_of(rows[0])  # one video: one display size
        union = sorted({i for k in wanted for i in results[k].indices})
        try:
            decoded = _get(reader, union, size)
        except Exception as exc:  # noqa: BLE001 - decoder errors come in many types; retry with PyAV
            if getattr(reader, "backend", "") == "pyav":
                raise
            log.debug("decord failed on %s (%s); retrying with PyAV", path, _why(exc))
            reader.close()
            reader = open_video(path, backend="pyav")
            decoded = _get(reader, union, size)
        for k in wanted:
            results[k].frames = np.stack([decoded[i] for i in results[k].indices])
        return results
    finally:
        reader.close()


def _get(reader, indices: list[int], size: tuple[int, int] | None) -> dict[int, np.ndarray]:
    frames = reader.get_frames(indices, size=size)
    return dict(zip(indices, frames))


def iter_batch_frames(rows: list[dict], indices_of: IndexFn, size_of: SizeFn,
                      backend: str = "auto") -> Iterator[ClipFrames]:
    """ClipFrames for every row, one video at a time (each video opened once)."""
    for members in group_by_video(rows).values():
        yield from read_video_clips([rows[i] for i in members], indices_of, size_of, backend)
